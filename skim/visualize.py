"""``python -m skim.visualize ckpt_path=... data=... example=<id or index>``: what did each layer skim?

For every chosen evaluation example the model runs once, in its evaluation mode (``prune`` unless the skim config says
otherwise), with the encoder recording which tokens entered each layer. The output shows

* the example's text as written (the tokenizer's offset mapping puts each word piece back on its characters), every
  token shaded by the number of layers it ran through (pale: skimmed early; dark: kept to the end);
* QA: the question, the gold answers and the predicted answer (gold underlined in green, prediction boxed in red);
  classification: the gold label and the prediction;
* below the text, the tokens entering each layer (real tokens, padding excluded) and, for Block-Skim, each block's
  P(keep) per layer as a heatmap (blank: the block was already gone, or the layer has no predictor).

It writes ``<run dir>/visualization.html`` (self-contained: inline CSS, charts as embedded PNG) and one PNG per
example and window (``example_<index>.png``; long QA contexts split into several windows get ``_w<k>``). When the
checkpoint lies in a skim run directory the run's own overrides are applied first, as ``skim.eval`` does.
``example`` takes an index into the evaluation split (the whole split: ``data.max_eval_samples`` does not renumber
it), an example id (QA), or a list: ``example=[0,3,56be4db0acb8001400a502ec]``.

The module functions (:func:`load_records`, :func:`collect_views`, :func:`render_html`, :func:`figure`) are what the
notebooks and the W&B callback use.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

import skim  # noqa: F401  (resolvers)
from skim.errors import ConfigError
from skim.tasks.base_module import validate_config
from skim.utils.config_store import register_configs
from skim.utils.run import run_cli, task_wrapper

log = logging.getLogger("skim.visualize")
register_configs()

#: colour scale of "layers run" (light to dark; black text stays readable on every shade)
CMAP = "YlGnBu"
_SHADE_RANGE = (0.05, 0.65)


# ---- what is drawn ---------------------------------------------------------------------------------------
@dataclass
class Piece:
    """One run of text in reading order: a token (``layers`` set) or the characters between two tokens."""

    text: str
    layers: int | None = None  # layers the token ran through (0..num_layers); None: not a token
    special: bool = False  # [CLS] / [SEP]: shown as a chip with the tokenizer's token text
    gold: bool = False
    pred: bool = False
    newline: bool = False  # start a new line before this piece


@dataclass
class Window:
    """One model input (a QA example longer than ``max_seq_length`` has several)."""

    pieces: list[Piece]
    kept_per_layer: list[int]
    real_tokens: int
    # Block-Skim: [num_layers][blocks] P(keep) of each original block (None: not evaluated at that layer)
    block_p_keep: list[list[float | None]] | None = None
    block_size: int | None = None


@dataclass
class ExampleView:
    task: str
    index: int
    example_id: str
    strategy: str
    num_layers: int
    header: list[tuple[str, str]]  # (label, value) lines: question / gold / prediction, or label / prediction
    windows: list[Window]
    thresholds: list[float] | None = None  # Block-Skim's, one per skim layer
    correct: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"example {self.index} ({self.example_id}) · skim={self.strategy}"


# ---- choosing examples -----------------------------------------------------------------------------------
def load_records(datamodule, wanted: Any, raw=None) -> list[tuple[int, dict[str, Any]]]:
    """``(index, record)`` of each wanted example of the evaluation split (index, id, or a list of them).

    QA records hold ``id, question, context, answers``; classification ones ``text, text_pair, label``. Everything is
    checked before any model runs: an unknown id or an index out of range is one ConfigError naming it. ``raw``: the
    split as :func:`eval_split` returned it (read again when None)."""
    wanted = list(wanted) if isinstance(wanted, (list, tuple, ListConfig)) else [wanted]
    if not wanted:
        raise ConfigError("example: choose at least one example (an index into the evaluation split, or a QA id)")
    raw = eval_split(datamodule) if raw is None else raw
    n = len(raw)
    ids = raw["id"] if "id" in raw.column_names else None
    id_index = {str(x): i for i, x in enumerate(ids)} if ids is not None else {}
    out = []
    for w in wanted:
        if isinstance(w, bool) or w is None or isinstance(w, float):
            raise ConfigError(f"example={w!r}: expected an index into the evaluation split or an example id")
        if isinstance(w, str) and w in id_index:
            i = id_index[w]
        elif isinstance(w, int) or (isinstance(w, str) and w.lstrip("-").isdigit()):
            i = int(w)
            if not 0 <= i < n:
                if str(w) in id_index:
                    i = id_index[str(w)]
                else:
                    raise ConfigError(f"example={w}: index out of range (the evaluation split has {n} examples: 0..{n - 1})")
        else:
            hint = f" (ids look like {next(iter(id_index))!r})" if id_index else " (this data has no ids: use an index)"
            raise ConfigError(f"example={w}: no example with this id in the evaluation split{hint}")
        row = raw[i]
        out.append((i, dict(row)))
    return out


def eval_split(datamodule):
    """The whole evaluation split as a datasets.Dataset, read (not tokenised) with the datamodule's own reader."""
    datamodule.prepare_data()  # synthetic sets are generated here
    return datamodule.load_split("validation")


# ---- running the model -----------------------------------------------------------------------------------
@torch.no_grad()
def collect_views(module, datamodule, records: list[tuple[int, dict[str, Any]]]) -> list[ExampleView]:
    """Run ``module`` (in eval mode) on each record and gather what the renderers draw."""
    was_training = module.training
    module.eval()
    try:
        with module.encoder.recording_alive():
            return [_qa_view(module, datamodule, i, r) if module.task == "qa" else _cls_view(module, datamodule, i, r) for i, r in records]
    finally:
        module.train(was_training)


def _to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _qa_view(module, dm, index: int, rec: dict[str, Any]) -> ExampleView:
    from skim.data.base import collate
    from skim.data.qa_datamodule import QADataModule, _truncate_questions
    from skim.metrics.qa_postprocess import postprocess_qa_predictions

    tok = dm.tokenizer
    one = {k: [rec[k]] for k in ("question", "context", "answers")}
    feats = dm.featurize(one, [0], tokenizer=tok, **(dm.featurize_options() | {"pad_to_max_length": False}))
    # the same tokenizer call as the featuriser, for the offsets of every token (the features keep only the context's)
    (question,), _ = _truncate_questions(tok, [rec["question"].lstrip()], dm.max_query_length)
    enc = tok(question, rec["context"], truncation="only_second", max_length=dm.max_seq_length, stride=dm.doc_stride,
              return_overflowing_tokens=True, return_offsets_mapping=True)
    n_feat = len(feats["input_ids"])
    assert enc["input_ids"] == feats["input_ids"], "visualisation tokens differ from the featuriser's"
    rows = [{k: feats[k][j] for k in feats} | {"feature_index": j} for j in range(n_feat)]
    batch = _to(collate(rows, scalars=QADataModule.scalar_columns, pad_token_id=tok.pad_token_id or 0), module.device)
    start, end, out = module(batch)
    features = [{"example_id": rec["id"], "offset_mapping": [o if o[0] >= 0 else None for o in f]} for f in feats["offset_mapping"]]
    _, nbest, _ = postprocess_qa_predictions(
        [{"id": rec["id"], "context": rec["context"]}], features, start.float().cpu().numpy(), end.float().cpu().numpy(),
        version_2_with_negative=bool(dm.version_2_with_negative),
        n_best_size=module.eval_cfg["n_best_size"], max_answer_length=module.eval_cfg["max_answer_length"],
    )
    best = (nbest.get(rec["id"]) or [{"text": "", "offsets": None}])[0]
    pred_span = tuple(best["offsets"]) if best.get("offsets") and best["offsets"][1] > best["offsets"][0] else None
    golds = [(s, s + len(t)) for s, t in zip(rec["answers"]["answer_start"], rec["answers"]["text"])]
    from skim.metrics.squad import squad_v1_scores

    gold_texts = list(rec["answers"]["text"])
    pred_text = rec["context"][pred_span[0]:pred_span[1]] if pred_span else ""
    scores = squad_v1_scores({rec["id"]: pred_text}, {rec["id"]: gold_texts or [""]})
    texts = {0: question, 1: rec["context"]}
    windows = []
    for j in range(n_feat):
        tokens = _tokens(enc.sequence_ids(j), enc["offset_mapping"][j], enc["input_ids"][j], tok)
        windows.append(_window(module, out, j, tokens, texts, {1: golds}, {1: [pred_span] if pred_span else []}))
    header = [("question", rec["question"]), ("gold", " | ".join(dict.fromkeys(gold_texts)) or "(no answer)"),
              ("predicted", pred_text or "(no answer)"), ("score", f"EM {scores['exact_match']:.0f} · F1 {scores['f1']:.1f}")]
    threshold = getattr(module.strategy, "threshold", None)  # Block-Skim's keep threshold of a layer
    thresholds = [threshold(i) for i in module.strategy.skim_layers] if callable(threshold) else None
    return ExampleView("qa", index, str(rec["id"]), module.strategy.name, module.encoder.num_layers, header, windows,
                       thresholds=thresholds, correct=scores["exact_match"] == 100.0,
                       extra={"prediction": pred_text, "gold": gold_texts, "f1": scores["f1"]})


def _cls_view(module, dm, index: int, rec: dict[str, Any]) -> ExampleView:
    from skim.data.base import collate

    tok = dm.tokenizer
    pair = dm.is_pair
    one = {"text": [rec["text"]], "text_pair": [rec.get("text_pair")], "label": [rec["label"]]}
    feats = dm.featurize(one, [index], tokenizer=tok, **(dm.featurize_options() | {"pad_to_max_length": False}))
    enc = tok(rec["text"], rec.get("text_pair") if pair else None, truncation="longest_first", max_length=dm.max_seq_length,
              return_offsets_mapping=True)
    assert enc["input_ids"] == feats["input_ids"][0], "visualisation tokens differ from the featuriser's"
    row = {k: feats[k][0] for k in feats}
    batch = _to(collate([row], scalars=dm.scalar_columns, pad_token_id=tok.pad_token_id or 0), module.device)
    logits, out = module(batch)
    names = list(dm.label_names)

    def label(v) -> str:
        if dm.is_regression:
            return f"{float(v):.3f}"
        return f"{names[int(v)]} ({int(v)})" if int(v) < len(names) else str(int(v))

    pred = float(logits.squeeze(-1)[0]) if dm.is_regression else int(logits.argmax(-1)[0])
    tokens = _tokens(enc.sequence_ids(0), enc["offset_mapping"], enc["input_ids"], tok)
    texts = {0: rec["text"], 1: rec.get("text_pair") or ""}
    header = [("label", label(rec["label"])), ("predicted", label(pred))]
    correct = None if dm.is_regression else pred == int(rec["label"])
    window = _window(module, out, 0, tokens, texts, {}, {})
    return ExampleView("cls", index, str(index), module.strategy.name, module.encoder.num_layers, header, [window],
                       correct=correct, extra={"prediction": pred, "label": rec["label"]})


def _tokens(seq_ids, offsets, input_ids, tok) -> list[tuple[int | None, int, int, str]]:
    """(segment, char start, char end, token text) per position; segment None: a special token."""
    return [(sid, int(o[0]), int(o[1]), tok.convert_ids_to_tokens(int(t))) for sid, o, t in zip(seq_ids, offsets, input_ids)]


def _window(module, out, j: int, tokens, texts: dict[int, str], golds: dict, preds: dict) -> Window:
    layers = out.alive_per_layer[:, j, : len(tokens)].sum(0).tolist()
    pieces: list[Piece] = []
    prev_seg, prev_end = "start", 0
    for (seg, s, e, token), k in zip(tokens, layers):
        if seg is None:
            pieces.append(Piece(token, layers=int(k), special=True))
            continue
        text = texts[seg]
        if seg != prev_seg:
            pieces.append(Piece("…" if s > 0 else "", newline=prev_seg != "start"))
        elif s > prev_end:
            gap_gold = _inside(golds.get(seg, []), prev_end, s)
            gap_pred = _inside(preds.get(seg, []), prev_end, s)
            pieces.append(Piece(text[prev_end:s], gold=gap_gold, pred=gap_pred))
        pieces.append(Piece(text[s:e], layers=int(k), gold=_overlaps(golds.get(seg, []), s, e),
                            pred=_overlaps(preds.get(seg, []), s, e)))
        prev_seg, prev_end = seg, e
    if prev_seg == 1 and prev_end < len(texts.get(1, "")) and module.task == "qa":
        pieces.insert(len(pieces) - 1, Piece(" …"))  # the window ends before the context does
    real = int(out.real_tokens[j])
    blocks = None
    found = out.extras.get("block_logits")
    bs = getattr(module.strategy.cfg, "block_size", None)
    if found and bs:
        n_blocks = -(-real // bs)
        blocks = [[None] * n_blocks for _ in range(module.encoder.num_layers)]
        for i, (logits, pos_b, valid) in found.items():
            p = logits.float().softmax(-1)[j, :, 1]
            for b, v, pk in zip(pos_b[j].tolist(), valid[j].tolist(), p.tolist()):
                if v and b < n_blocks:
                    blocks[i][b] = pk
    return Window(pieces, [int(x) for x in out.kept_per_layer[:, j].tolist()], real, blocks, bs if blocks else None)


def _overlaps(spans, s: int, e: int) -> bool:
    return any(s < b and e > a for a, b in spans)


def _inside(spans, s: int, e: int) -> bool:
    return any(a <= s and e <= b for a, b in spans)


# ---- colours ---------------------------------------------------------------------------------------------
def shade(layers: int, num_layers: int) -> tuple[float, float, float]:
    import matplotlib

    lo, hi = _SHADE_RANGE
    r, g, b, _ = matplotlib.colormaps[CMAP](lo + (hi - lo) * layers / max(num_layers, 1))
    return (r, g, b)


def _css(rgb) -> str:
    from matplotlib.colors import to_hex

    return to_hex(rgb)


# ---- matplotlib ------------------------------------------------------------------------------------------
def figure(view: ExampleView, window: int = 0, with_text: bool = True, width_in: float = 10.0, dpi: int = 100):
    """The example as a matplotlib figure: (optionally) the shaded text, then the kept counts and Block-Skim's
    P(keep) heatmap."""
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import Rectangle

    win = view.windows[window]
    fontsize, line_h, margin = 9.5, 19.0, 12.0
    width_px = width_in * dpi
    placed, n_lines = [], 0
    if with_text:
        prop = FontProperties(size=fontsize)
        bold = FontProperties(size=fontsize, weight="bold")
        renderer = RendererAgg(10, 10, dpi)

        def measure(s: str, p=prop) -> float:
            return renderer.get_text_width_height_descent(s, p, ismath=False)[0] if s else 0.0

        x, line = margin, 0
        suffix = f" · window {window + 1}/{len(view.windows)}" if len(view.windows) > 1 else ""
        placed.append((margin, line, f"{view.title}{suffix}", None, FontProperties(size=fontsize - 1, style="italic")))
        line += 1
        for label, value in view.header:
            placed.append((margin, line, f"{label}:", None, bold))
            w = measure(f"{label}: ", bold)
            for word in _wrap_words(value, width_px - 2 * margin - w, measure):
                placed.append((margin + w, line, word, None, prop))
                line += 1
        line += 0.4
        x = margin
        for pc in win.pieces:
            if pc.newline and x > margin:
                line, x = line + 1.15, margin
            text = pc.text.replace("\n", " ")
            if not text:
                continue
            w = measure(text) + (6 if pc.special else 0)
            if pc.layers is not None and x + w > width_px - margin and x > margin:
                line, x = line + 1.15, margin
            if pc.layers is None and x == margin and not text.strip():
                continue  # no leading blank on a new line
            placed.append((x, line, text, pc, prop))
            x += w
        n_lines = line + 1
    text_h = (n_lines * line_h + margin) / dpi if with_text else 0.0
    chart_h = 2.6 if with_text else 2.3
    fig = plt.figure(figsize=(width_in, text_h + chart_h + 0.35), dpi=dpi)
    total_h = fig.get_figheight()
    if with_text:
        ax = fig.add_axes((0, 1 - text_h / total_h, 1, text_h / total_h))
        ax.set_xlim(0, width_px)
        ax.set_ylim(text_h * dpi, 0)
        ax.axis("off")
        for x, line, text, pc, p in placed:
            y = margin + line * line_h
            if pc is not None and pc.layers is not None:
                w = measure(text) + (6 if pc.special else 0)
                ax.add_patch(Rectangle((x, y - 1), w, line_h - 3, facecolor=shade(pc.layers, view.num_layers), edgecolor="none"))
                if pc.pred:
                    ax.add_patch(Rectangle((x, y - 1), w, line_h - 3, facecolor="none", edgecolor="#d62728", lw=1.2))
            if pc is not None and pc.gold and text.strip():
                ax.plot([x, x + measure(text)], [y + line_h - 3.5] * 2, color="#2ca02c", lw=2.2, solid_capstyle="butt")
            ax.text(x + (3 if pc is not None and pc.special else 0), y + line_h / 2 - 2, text, fontproperties=p, va="center",
                    ha="left", color="#555555" if pc is not None and pc.special else "black")
    # charts: kept tokens per layer, Block-Skim's P(keep) heatmap, the colour key of the text
    bottom = (0.62 if with_text else 0.45) / total_h
    height = (chart_h - 0.55) / total_h
    has_blocks = win.block_p_keep is not None
    ax1 = fig.add_axes((0.06, bottom, 0.26 if has_blocks else 0.55, height))
    L = view.num_layers
    ax1.bar(range(L), win.kept_per_layer, color=[shade(i + 1, L) for i in range(L)], edgecolor="#333333", lw=0.5)
    ax1.axhline(win.real_tokens, color="grey", ls="--", lw=0.8)
    for i, k in enumerate(win.kept_per_layer):
        ax1.annotate(str(k), (i, k), ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax1.set_xticks(range(L))
    ax1.set_xlabel("layer")
    ax1.set_ylabel("tokens entering")
    ax1.set_ylim(0, win.real_tokens * 1.18 + 1)
    ax1.set_title(f"kept tokens (of {win.real_tokens} real)", fontsize=9)
    if has_blocks:
        import numpy as np

        mat = np.array([[np.nan if p is None else p for p in row] for row in win.block_p_keep], dtype=float)
        ax2 = fig.add_axes((0.39, bottom, 0.42, height))
        im = ax2.imshow(mat, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
        ax2.set_xlabel(f"block ({win.block_size} tokens)")
        ax2.set_ylabel("layer")
        ax2.set_yticks(range(L))
        ts = view.thresholds or []
        shown = " / ".join(f"{t:g}" for t in ts) + " per layer" if len(set(ts)) > 1 else f"{ts[0]:g}" if ts else ""
        ax2.set_title(f"Block-Skim P(keep) per block{f' (skims below {shown})' if shown else ''}", fontsize=9)
        cb = fig.colorbar(im, ax=ax2, fraction=0.05, pad=0.02)
        cb.ax.tick_params(labelsize=7)
    key = fig.add_axes((0.9 if has_blocks else 0.7, bottom, 0.015, height))
    levels = list(range(L + 1))
    cmap = ListedColormap([shade(k, L) for k in levels])
    norm = BoundaryNorm([k - 0.5 for k in levels] + [L + 0.5], cmap.N)
    cb = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), cax=key, ticks=levels)
    cb.set_label("layers a token ran", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    mark = {True: "correct", False: "wrong", None: ""}[view.correct]
    suffix = f" · window {window + 1}/{len(view.windows)}" if len(view.windows) > 1 else ""
    if not with_text:
        fig.suptitle(f"{view.title}{suffix}" + (f" · {mark}" if mark else ""), fontsize=10, y=1 - 0.05 / total_h, va="top")
    else:
        marks = " · gold answer underlined green · prediction boxed red" if view.task == "qa" else ""
        fig.text(0.99, 0.03 / total_h, f"text: each token shaded by the number of layers it ran{marks}", ha="right",
                 va="bottom", fontsize=7, color="#666666")
    return fig


def _wrap_words(value: str, width: float, measure) -> list[str]:
    lines, cur = [], ""
    for word in value.split():
        cand = f"{cur} {word}".strip()
        if cur and measure(cand) > width:
            lines.append(cur)
            cur = word
        else:
            cur = cand
    return lines + [cur] if cur or not lines else lines


def png_bytes(view: ExampleView, window: int = 0, with_text: bool = True) -> bytes:
    import matplotlib.pyplot as plt

    fig = figure(view, window, with_text=with_text)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    plt.close(fig)
    return buf.getvalue()


# ---- HTML ------------------------------------------------------------------------------------------------
_STYLE = """
.skimvis{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:60em;color:#222}
.skimvis h1{font-size:1.3em}
.skimvis .ex{border-top:1px solid #ccc;padding-top:.6em;margin-top:1.2em}
.skimvis .ex h2{font-size:1.05em;margin:.2em 0 .4em}
.skimvis .hdr td{padding:.1em .6em .1em 0;vertical-align:top;text-align:left}
.skimvis .hdr td:first-child{font-weight:600;color:#555}
.skimvis .txt{line-height:1.9;font-size:.95em;margin:.6em 0}
.skimvis .t{border-radius:2px;padding:.12em 0}
.skimvis .sp{font-size:.75em;color:#555;border:1px solid #aaa;border-radius:3px;padding:0 .2em;margin:0 .15em}
.skimvis .g{text-decoration:underline;text-decoration-color:#2ca02c;text-decoration-thickness:3px;text-underline-offset:3px}
.skimvis .p{outline:1.5px solid #d62728}
.skimvis .key span{display:inline-block;min-width:1.6em;text-align:center;font-size:.8em;border-radius:2px}
.skimvis .ok{color:#2ca02c}.skimvis .bad{color:#d62728}
.skimvis img{max-width:100%}
"""


def render_html(views: list[ExampleView], title: str = "skim: what was skimmed", standalone: bool = True) -> str:
    """One self-contained HTML page (inline CSS, charts as embedded PNG) for ``views``; ``standalone=False``: the same
    as a fragment whose styles apply to it only (for a notebook cell)."""
    parts = [f"<style>{_STYLE}</style><div class='skimvis'><h1>{html.escape(title)}</h1>"]
    if views:
        L = views[0].num_layers
        key = "".join(f"<span style='background:{_css(shade(k, L))}'>{k}</span>" for k in range(L + 1))
        parts.append(
            f"<p class='key'>Each token is shaded by the number of layers it ran through (of {L}): {key} "
            "&nbsp; <span class='g'>gold answer</span> &nbsp; <span class='p'>prediction</span> &nbsp; "
            "<span class='sp'>[CLS]</span> special tokens. Hover a token for its count.</p>"
        )
    for v in views:
        parts.append(_example_html(v))
    parts.append("</div>")
    body = "".join(parts)
    if not standalone:
        return body
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='margin:1.5em auto;max-width:62em'>{body}</body></html>")


def _example_html(v: ExampleView) -> str:
    mark = {True: " <span class='ok'>✓</span>", False: " <span class='bad'>✗</span>", None: ""}[v.correct]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(val))}</td></tr>" for k, val in v.header)
    out = [f"<div class='ex'><h2>{html.escape(v.title)}{mark}</h2><table class='hdr'>{rows}</table>"]
    for w_i, w in enumerate(v.windows):
        if len(v.windows) > 1:
            out.append(f"<h3 style='font-size:.9em'>window {w_i + 1} of {len(v.windows)}</h3>")
        spans = []
        for pc in w.pieces:
            if pc.newline:
                spans.append("<br>")
            cls = " ".join(c for c, on in (("g", pc.gold), ("p", pc.pred)) if on)
            text = html.escape(pc.text)
            if pc.layers is None:
                spans.append(f"<span class='{cls}'>{text}</span>" if cls else text)
                continue
            tip = f"{pc.text}: ran {pc.layers} of {v.num_layers} layers"
            bg = _css(shade(pc.layers, v.num_layers))
            kind = "sp" if pc.special else "t"
            spans.append(f"<span class='{kind} {cls}' style='background:{bg}' title='{html.escape(tip, quote=True)}'>{text}</span>")
        out.append(f"<div class='txt'>{''.join(spans)}</div>")
        kept = " ".join(str(k) for k in w.kept_per_layer)
        out.append(f"<p style='font-size:.85em;color:#555'>tokens entering layers 0–{v.num_layers - 1}: {kept} (of {w.real_tokens} real)</p>")
        img = base64.b64encode(png_bytes(v, w_i, with_text=False)).decode()
        out.append(f"<img alt='kept tokens per layer' src='data:image/png;base64,{img}'>")
    out.append("</div>")
    return "".join(out)


# ---- writing ---------------------------------------------------------------------------------------------
def write_outputs(views: list[ExampleView], out_dir: str | os.PathLike) -> list[Path]:
    """``visualization.html`` and one PNG per example and window; every file is written to a temporary name first and
    renamed once all are rendered, so a failure leaves none of them behind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rendered: dict[Path, bytes] = {out / "visualization.html": render_html(views).encode()}
    for v in views:
        for w in range(len(v.windows)):
            name = f"example_{v.index}" + (f"_w{w + 1}" if len(v.windows) > 1 else "") + ".png"
            rendered[out / name] = png_bytes(v, w)
    tmps = []
    try:
        for path, data in rendered.items():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmps.append((tmp, path))
    except BaseException:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in tmps:
        os.replace(tmp, path)
    return [p for _, p in tmps]


# ---- CLI -------------------------------------------------------------------------------------------------
def visualize(cfg: DictConfig) -> dict:
    import matplotlib
    from hydra.utils import instantiate

    from skim.tasks.checkpoint import load_task_module

    matplotlib.use("Agg")  # files only
    validate_config(cfg)
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path is required: python -m skim.visualize ckpt_path=<run>/checkpoints/last.ckpt example=0")
    if cfg.get("example") is None:
        raise ConfigError("example is required: an index into the evaluation split, a QA example id, or a list of them")
    torch.manual_seed(cfg.seed)
    module = load_task_module(cfg, evaluation=OmegaConf.to_container(cfg.evaluation, resolve=True))
    datamodule = instantiate(cfg.data)
    records = load_records(datamodule, cfg.example)
    if module.task == "cls" and module.classifier is None:
        raise ConfigError(f"ckpt_path {cfg.ckpt_path}: the checkpoint has no classification head")
    views = collect_views(module, datamodule, records)
    paths = write_outputs(views, cfg.paths.output_dir)
    for v in views:
        print(f"[visualize] {v.title}: " + " · ".join(f"{k} {val}" for k, val in v.header if k != "question"))
    for p in paths:
        print(f"[visualize] wrote {p}")
    return {"files": [str(p) for p in paths]}


@hydra.main(version_base="1.3", config_path="../conf", config_name="visualize")
def main(cfg: DictConfig) -> None:
    task_wrapper(visualize)(cfg)


if __name__ == "__main__":
    from skim.eval import with_run_overrides

    sys.argv[1:] = with_run_overrides(sys.argv[1:], "skim.visualize")
    run_cli(main)
