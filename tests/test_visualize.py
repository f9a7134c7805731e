"""skim.visualize: each token's layer count comes from the encoder (and adds up to its per-layer counts), the text is
the original's characters, every strategy and both tasks render, and the CLI writes HTML + PNG or fails with one line."""

from __future__ import annotations

import html as _html
import re

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from tests.conftest import SHARED_DATA, SQUAD_DEV, ragged_batch, require_shared, tiny_bert
from tests.helpers.runs import compose_cfg, run_cli

TINY = ["model=tiny", "model.config_overrides.hidden_size=32", "model.config_overrides.num_hidden_layers=2"]
SYNTH = ["data=synthetic", "data.synthetic.train_size=20", "data.synthetic.val_size=6"]
STRATEGIES = {
    "none": ["skim=none"],
    "blockskim": ["skim=blockskim", "skim.threshold=0.5"],
    "transkimmer": ["skim=transkimmer", "skim.bias_init=0.0"],
    "power": ["skim=power", "skim.stage=hard", "skim.retention=[0.7,0.4]"],
    "ltp": ["skim=ltp", "skim.stage=hard", "skim.final_threshold=1.0"],
    "truncate": ["skim=truncate", "skim.keep_after=0", "skim.keep_ratio=0.5"],
    "random": ["skim=random", "skim.keep_after=0", "skim.keep_ratio=0.5"],
}


def _module_and_data(overrides: list[str]):
    GlobalHydra.instance().clear()
    cfg = compose_cfg([*TINY, *overrides], config_name="visualize")
    torch.manual_seed(0)
    return instantiate(cfg.module), instantiate(cfg.data)


def _segment_text(window, seg: int) -> str:
    """The characters of the ``seg``-th text line (0: question / text, 1: context / text_pair), tokens and gaps."""
    lines, cur = [], []
    for pc in window.pieces:
        if pc.newline:
            lines.append(cur)
            cur = []
        if not pc.special and pc.text not in ("…", " …"):
            cur.append(pc.text)
    lines.append(cur)
    return "".join(lines[seg])


def _check_counts(view) -> None:
    """Tokens that ran more than i layers == the encoder's count of tokens entering layer i (padding excluded)."""
    for w in view.windows:
        layers = [pc.layers for pc in w.pieces if pc.layers is not None]
        assert len(layers) == w.real_tokens
        assert [sum(k > i for k in layers) for i in range(view.num_layers)] == w.kept_per_layer


def test_encoder_records_alive_tokens_in_original_coordinates():
    from skim.encoders.skim_encoder import SkimEncoder
    from skim.strategies import build_strategy

    ids, mask = ragged_batch(3, 70, seed=1)
    enc = SkimEncoder(tiny_bert(layers=3), build_strategy({"name": "truncate", "keep_after": 1, "keep_ratio": 0.4})).eval()
    with torch.no_grad():
        assert enc(ids, mask, mode="prune").alive_per_layer is None  # off by default
        with enc.recording_alive():
            pruned, masked = enc(ids, mask, mode="prune"), enc(ids, mask, mode="mask")
        assert enc(ids, mask, mode="prune").alive_per_layer is None  # off again after the block
    alive = pruned.alive_per_layer
    assert alive.shape == (3, 3, 70)
    assert torch.equal(alive.sum(-1), pruned.kept_per_layer)
    assert torch.equal(alive, masked.alive_per_layer)  # mask and prune modes keep the same tokens
    assert not (alive & ~mask.bool()).any()  # padding never counts
    assert not (alive[1:] & ~alive[:-1]).any()  # a skimmed token never comes back
    assert alive[0].sum() > alive[2].sum()  # and the strategy really skimmed


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_qa_view(name, tmp_run_root):
    from skim.visualize import collect_views, load_records, render_html

    module, dm = _module_and_data([*SYNTH, *STRATEGIES[name]])
    records = load_records(dm, [0, "syn-1001237-2"] if name == "none" else [1])
    views = collect_views(module, dm, records)
    for (_, rec), view in zip(records, views):
        assert len(view.windows) == 1  # synthetic contexts fit one window
        _check_counts(view)
        w = view.windows[0]
        # the text is the original's characters, not word pieces
        assert _segment_text(w, 0) == rec["question"].strip()
        assert _segment_text(w, 1) == rec["context"]
        assert any(pc.gold for pc in w.pieces) and ("predicted", view.extra["prediction"] or "(no answer)") in view.header
        page = render_html([view])
        assert _html.escape(rec["question"].strip()) in page and "data:image/png;base64," in page
    if name == "none":
        assert records[1][1]["id"] == "syn-1001237-2" and views[0].windows[0].kept_per_layer == [views[0].windows[0].real_tokens] * 2
    if name in ("truncate", "random", "power"):
        assert views[0].windows[0].kept_per_layer[1] < views[0].windows[0].real_tokens
    if name == "blockskim":
        blocks = views[0].windows[0].block_p_keep
        assert len(blocks) == 2 and all(p is not None and 0.0 <= p <= 1.0 for p in blocks[0])
        assert views[0].thresholds == [module.strategy.cfg.threshold] * 2  # the strategy's own, per skim layer


def test_mask_mode_view_equals_prune_mode(tmp_run_root):
    from skim.visualize import collect_views, load_records

    layers = {}
    for mode in ("prune", "mask"):
        module, dm = _module_and_data([*SYNTH, *STRATEGIES["random"], f"skim.eval_mode={mode}"])
        view = collect_views(module, dm, load_records(dm, [3]))[0]
        layers[mode] = [pc.layers for pc in view.windows[0].pieces]
    assert layers["prune"] == layers["mask"]


def test_classification_view(tmp_run_root):
    from skim.visualize import collect_views, load_records, png_bytes

    module, dm = _module_and_data(["data=synthetic_sentiment", "data.synthetic.train_size=20", "data.synthetic.val_size=6",
                                   *STRATEGIES["truncate"]])
    module._build_head(dm.num_labels, dm.is_regression, dm.metric_names)  # what setup() does from the data
    (i, rec), = load_records(dm, 2)
    view = collect_views(module, dm, [(i, rec)])[0]
    _check_counts(view)
    assert _segment_text(view.windows[0], 0) == rec["text"]
    assert view.header[0][0] == "label" and view.header[1][0] == "predicted"
    assert png_bytes(view)[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the CLI ---------------------------------------------------------------------------------------------
SQUAD = [*TINY, "data=squad_local", f"data.train_file={SQUAD_DEV}", f"data.validation_file={SQUAD_DEV}", "skim=blockskim_fixed"]
TRAIN = [*SQUAD, "data.max_train_samples=16", "data.max_eval_samples=16", "data.batch_size=8", "skim.threshold=0.5",
         "trainer=cpu", "trainer.max_epochs=1", "final_eval=none"]


@pytest.fixture(scope="module")
def blockskim_ckpt(tmp_path_factory):
    require_shared(SQUAD_DEV)
    root = tmp_path_factory.mktemp("visroot")
    res = run_cli(["-m", "skim.train", *TRAIN, f"hydra.run.dir={root / 'train'}"], cwd=root,
                  env_extra={"SKIM_ROOT": str(root), "SKIM_SHARED_DATA": str(SHARED_DATA)})
    assert res.returncode == 0, res.stderr[-3000:]
    return root, root / "train" / "checkpoints" / "last.ckpt"


def test_cli_writes_html_and_png_for_squad_examples(blockskim_ckpt):
    import gzip
    import json

    root, ckpt = blockskim_ckpt
    with gzip.open(SQUAD_DEV) as f:
        dev = json.loads(f.read())["data"][0]["paragraphs"][0]
    qa = dev["qas"][1]
    out = root / "vis"
    res = run_cli(["-m", "skim.visualize", f"ckpt_path={ckpt}", f"example=[{qa['id']},0]", "skim.threshold=0.6",
                   f"hydra.run.dir={out}"], cwd=root, env_extra={"SKIM_ROOT": str(root), "SKIM_SHARED_DATA": str(SHARED_DATA)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "using the training run's overrides" in res.stderr
    page = (out / "visualization.html").read_text()
    assert page.count("class='ex'") == 2 and qa["id"] in page
    # without the markup, the page holds the question and the whole context as written (cased, punctuated, spaced),
    # although the tokenizer is uncased and splits words into pieces
    text = _html.unescape(re.sub(r"<[^>]+>", "", page))
    assert qa["question"].strip() in text and dev["context"] in text
    for name in ("example_1.png", "example_0.png"):
        data = (out / name).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) < 300_000


def _run_visualize_in_process(overrides, out_dir, capsys):
    from skim.utils.run import task_wrapper
    from skim.visualize import visualize

    GlobalHydra.instance().clear()
    cfg = compose_cfg(overrides, config_name="visualize", output_dir=out_dir)
    with pytest.raises(SystemExit) as exc:
        task_wrapper(visualize)(cfg)
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("skim: error:")]
    return exc.value.code, errors


@pytest.mark.parametrize(("example", "message"), [("99999", "index out of range (the evaluation split has 10570"),
                                                 ("not-an-id", "no example with this id")])
def test_bad_example_is_one_error_and_writes_nothing(blockskim_ckpt, example, message, tmp_path, capsys, monkeypatch):
    root, ckpt = blockskim_ckpt
    monkeypatch.setenv("SKIM_ROOT", str(root))
    monkeypatch.setenv("SKIM_SHARED_DATA", str(SHARED_DATA))
    code, errors = _run_visualize_in_process(
        [*SQUAD, f"ckpt_path={ckpt}", f"example={example}"], tmp_path / "out", capsys
    )
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["FAILED"]


def test_missing_checkpoint_is_one_error(tmp_run_root, capsys):
    code, errors = _run_visualize_in_process([*TINY, *SYNTH, f"ckpt_path={tmp_run_root / 'nope.ckpt'}"], tmp_run_root / "out", capsys)
    assert code == 2 and len(errors) == 1 and "checkpoint file not found" in errors[0]
    assert not (tmp_run_root / "out" / "visualization.html").exists()


def test_blockskim_view_carries_each_layers_threshold(tmp_run_root):
    from skim.visualize import collect_views, figure, load_records

    module, dm = _module_and_data([*SYNTH, *STRATEGIES["blockskim"], "skim.layer_thresholds=[0.2,0.7]"])
    view = collect_views(module, dm, load_records(dm, [1]))[0]
    assert view.thresholds == [0.2, 0.7]
    fig = figure(view)
    assert any("skims below 0.2 / 0.7 per layer" in ax.get_title() for ax in fig.axes)
