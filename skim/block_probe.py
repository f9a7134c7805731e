"""``python -m skim.block_probe``: what each layer of a QA model tells about which 32-token blocks hold the answer.

Block-Skim's predictor after layer i reads only the diagonal ``block_size`` × ``block_size`` blocks of that layer's
attention. On real SQuAD it ranks answer blocks barely above chance in the first layers (block AUC ~0.55 in layers
0–3, README), so it cannot skim before the last layers. This asks whether the limit is that input or the layers
themselves. The model runs dense with eager attention over the training features of ``data`` (``data.max_train_samples``
examples) and the evaluation features; for every layer and every feature family a logistic-regression probe is fitted
on the training blocks and scored by ROC AUC on the evaluation blocks:

* ``position``: the block's index, absolute and relative to the example's real blocks (what the place alone tells);
* ``diagonal``: per head, the attention mass the block's tokens give their own block and their largest weight inside
  it (a summary of what Block-Skim's CNN reads);
* ``question``: per head, the attention the protected tokens ([CLS], question, [SEP]) give the block and the block's
  tokens give them: the question–context attention, which no diagonal block holds (the features that
  ``skim=blockskim_question`` adds to its predictor's input);
* ``hidden``: the block's mean hidden state after the layer (Transkimmer's predictor reads it per token);
* ``all``: the four together.

Blocks are those holding a real token; an answer block holds at least ``min_answer_tokens`` answer tokens (the
strategy's own labels: 1 is the fixed rule, 2 the original's; as there, a window without the answer is labelled at
[CLS], so with rule 1 its first block counts as an answer block in ``auc``, not in the context blocks). ``auc`` is over every such block, as Block-Skim's
``block_auc_layer*``; ``context`` fits and scores only blocks without [CLS] / question / first [SEP] tokens (the
closing [SEP] alone does not count, as in ``skim.oracle``), the ones a
skimming decision is about, and adds, per answer-block recall in ``recalls``, the share of the other context blocks
that the probe ranks below the threshold keeping that recall: what a skimmer reading that input could drop there.
Writes ``block_probe.json`` / ``.md`` into the run directory.
"""

from __future__ import annotations

from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

import skim  # noqa: F401
from skim.errors import ConfigError
from skim.strategies.blockskim import (
    block_labels,
    block_liveness,
    question_attention_from_probs,
    question_block_features,
)
from skim.tasks.base_module import validate_config
from skim.tasks.checkpoint import run_module
from skim.utils.config_store import register_configs
from skim.utils.run import git_commit, hydra_overrides, run_cli, task_wrapper, write_report

register_configs()

FAMILIES = ("position", "diagonal", "question", "hidden")


def block_features(
    attentions: tuple[torch.Tensor, ...],
    hidden_states: tuple[torch.Tensor, ...],
    real: torch.Tensor,
    question: torch.Tensor,
    block_size: int,
) -> list[dict[str, torch.Tensor]]:
    """Per layer, each family's features of every block: ``[B, K, F]``. ``attentions[i]``: layer i's [B, H, n, n]
    probabilities; ``hidden_states[i + 1]``: its output; ``real`` / ``question``: [B, n] bool token masks."""
    B, n = real.shape
    bs = block_size
    K, pad = -(-n // bs), -n % bs
    N = K * bs
    rp = F.pad(real.float(), (0, pad))
    per_block = rp.view(B, K, bs).sum(-1).clamp_min(1)  # real tokens per block

    def pool(v: torch.Tensor) -> torch.Tensor:  # [B, H, N] per token -> [B, K, H]: mean over the block's real tokens
        return ((v * rp[:, None]).view(*v.shape[:2], K, bs).sum(-1) / per_block[:, None]).transpose(1, 2)

    index = torch.arange(K, dtype=torch.float).expand(B, K)
    position = torch.stack([index, index / rp.view(B, K, bs).any(-1).sum(-1, keepdim=True).clamp_min(1)], -1)
    own = (torch.arange(N) // bs).view(1, 1, N, 1)
    out = []
    for i, probs in enumerate(attentions):
        H = probs.shape[1]
        full = F.pad(probs.float(), (0, pad, 0, pad))  # [B, H, N, N]
        p = full.view(B, H, N, K, bs)
        to_block, max_block = p.sum(-1), p.amax(-1)  # [B, H, N, K]: what each query gives each block
        own_mass = to_block.gather(-1, own.expand(B, H, N, 1)).squeeze(-1)
        own_max = max_block.gather(-1, own.expand(B, H, N, 1)).squeeze(-1)
        # the features skim=blockskim_question gives its predictor
        question_feats = question_block_features(*question_attention_from_probs(probs, question), real, bs)
        hidden = F.pad(hidden_states[i + 1].float(), (0, 0, 0, pad)).view(B, K, bs, -1)
        out.append({
            "position": position,
            "diagonal": torch.cat([pool(own_mass), pool(own_max)], -1),
            "question": question_feats.view(B, K, 2 * H),
            "hidden": (hidden * rp.view(B, K, bs, 1)).sum(2) / per_block[..., None],
        })  # fmt: skip
    return out


@torch.no_grad()
def collect(module, loader, block_size: int, min_answer_tokens: int) -> dict[str, Any]:
    """Every real block's features per layer and family, its label and whether it is a context block."""
    backbone = module.encoder.backbone
    feats: list[dict[str, list[torch.Tensor]]] = []
    labels, context = [], []
    for batch in loader:
        mask = batch["attention_mask"]
        real = mask.bool()
        question = batch["protect_mask"].bool() & real
        out = backbone(input_ids=batch["input_ids"], attention_mask=mask, token_type_ids=batch.get("token_type_ids"),
                       output_attentions=True, output_hidden_states=True)  # fmt: skip
        layers = block_features(out.attentions, out.hidden_states, real, question, block_size)
        B, n = mask.shape
        live, K = block_liveness(real, block_size)
        valid = live.any(-1).view(B, K)
        # the closing [SEP] alone does not make the last block a question block (as skim.oracle counts them)
        question_blocks = question.index_put((torch.arange(B), mask.sum(1) - 1), torch.tensor(False))
        labels.append(block_labels(batch["start_positions"], batch["end_positions"], n, block_size, min_answer_tokens)[valid])
        context.append(~block_liveness(question_blocks, block_size)[0].any(-1).view(B, K)[valid])
        if not feats:
            feats = [{f: [] for f in FAMILIES} for _ in layers]
        for acc, layer in zip(feats, layers):
            for f in FAMILIES:
                acc[f].append(layer[f][valid])
    return {"features": [{f: torch.cat(v).numpy() for f, v in acc.items()} for acc in feats],
            "labels": torch.cat(labels).numpy(), "context": torch.cat(context).numpy()}  # fmt: skip


def probe_scores(train: tuple, dev: tuple, recalls: tuple[float, ...] = ()) -> dict[str, Any] | None:
    """A standardised logistic regression fitted on ``train`` ((X, y)), scored on ``dev``: its ROC AUC and, per recall
    in ``recalls``, the share of other blocks it ranks below the highest threshold that keeps that share of answer
    blocks (what a skimmer with this input could drop at that recall). None without both classes."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x, y), (xd, yd) = train, dev
    if len(np.unique(y)) < 2 or len(np.unique(yd)) < 2:
        return None
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    p = probe.predict_proba(xd)[:, 1]
    fpr, tpr, _ = roc_curve(yd, p, drop_intermediate=False)  # every threshold: none reaching r may be dropped
    skip = {str(r): float(1.0 - fpr[np.argmax(tpr >= r)]) for r in recalls}
    return {"auc": float(roc_auc_score(yd, p)), "skip_at_recall": skip}


def probe_report(train: dict[str, Any], dev: dict[str, Any], recalls: tuple[float, ...]) -> list[dict[str, Any]]:
    import numpy as np

    rows = []
    c, cd = train["context"], dev["context"]
    for i, (tr, dv) in enumerate(zip(train["features"], dev["features"])):
        row: dict[str, Any] = {"layer": i, "blocks": len(dev["labels"]), "answer_share": float(dev["labels"].mean()),
                               "context_blocks": int(cd.sum()), "all_blocks": {}, "context": {}}  # fmt: skip
        for f in (*FAMILIES, "all"):
            x = np.concatenate([tr[g] for g in FAMILIES], 1) if f == "all" else tr[f]
            xd = np.concatenate([dv[g] for g in FAMILIES], 1) if f == "all" else dv[f]
            row["all_blocks"][f] = probe_scores((x, train["labels"]), (xd, dev["labels"]))
            row["context"][f] = probe_scores((x[c], train["labels"][c]), (xd[cd], dev["labels"][cd]), recalls)
        rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]], recalls: tuple[float, ...]) -> str:
    names = (*FAMILIES, "all")

    def table(title: str, cell) -> list[str]:
        lines = [f"| layer | {title}: " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        return lines + [f"| {r['layer']} | " + " | ".join(cell(r, f) for f in names) + " |" for r in rows]

    def fmt(scores: dict | None, key: str, recall: float | None = None) -> str:
        if scores is None:
            return "—"
        return f"{scores[key]:.3f}" if recall is None else f"{scores[key][str(recall)]:.3f}"

    r0 = rows[0] if rows else {"blocks": 0, "context_blocks": 0, "answer_share": 0.0}
    head = f"Evaluation blocks: {r0['blocks']} (answer share {r0['answer_share']:.3f}), context blocks: {r0['context_blocks']}."
    out = [head, ""]
    out += table("AUC, all blocks", lambda r, f: fmt(r["all_blocks"][f], "auc")) + [""]
    out += table("AUC, context blocks", lambda r, f: fmt(r["context"][f], "auc"))
    for recall in recalls:
        out += ["", *table(f"context blocks skippable at answer recall {recall}",
                           lambda r, f, recall=recall: fmt(r["context"][f], "skip_at_recall", recall))]  # fmt: skip
    return "\n".join(out) + "\n"


def run_block_probe(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate

    validate_config(cfg)
    if cfg.data.task != "qa":
        raise ConfigError(f"skim.block_probe needs an extractive-QA data config (data.task=qa), got data.task={cfg.data.task!r}")
    if cfg.skim.name != "none":
        raise ConfigError(f"skim.block_probe probes the dense model's layers (skim=none), got skim={cfg.skim.name}")
    if not isinstance(cfg.min_answer_tokens, int) or cfg.min_answer_tokens < 1:
        raise ConfigError(f"min_answer_tokens must be a positive integer, got {cfg.min_answer_tokens!r}")
    if not isinstance(cfg.block_size, int) or cfg.block_size < 1:
        raise ConfigError(f"block_size must be a positive integer, got {cfg.block_size!r}")
    recalls = OmegaConf.to_container(cfg.recalls) if OmegaConf.is_list(cfg.recalls) else cfg.recalls
    if not isinstance(recalls, list) or not all(isinstance(r, float) and 0.0 < r <= 1.0 for r in recalls):
        raise ConfigError(f"recalls must be a list of answer-block recalls in (0, 1], got {recalls!r}")
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    module = run_module(cfg)
    module.use_attn_implementation("eager")  # the only one that returns every layer's probabilities
    module.eval()
    args = (cfg.block_size, cfg.min_answer_tokens)
    train = collect(module, dm.train_dataloader(), *args)
    dev = collect(module, dm.val_dataloader(), *args)
    recalls = tuple(recalls)
    rows = probe_report(train, dev, recalls)
    record = {"overrides": hydra_overrides(), "git_commit": git_commit(), "block_size": cfg.block_size,
              "min_answer_tokens": cfg.min_answer_tokens, "train_blocks": len(train["labels"]),
              "data_info": dm.describe(), "layers": rows}  # fmt: skip
    write_report(cfg.paths.output_dir, "block_probe", record, to_markdown(rows, recalls))
    return {}


@hydra.main(version_base="1.3", config_path="../conf", config_name="block_probe")
def main(cfg: DictConfig) -> None:
    task_wrapper(run_block_probe)(cfg)


if __name__ == "__main__":
    run_cli(main)
