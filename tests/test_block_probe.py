"""skim.block_probe: per-layer linear probes of a dense QA model's attention and hidden states on answer blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import skim.block_probe as bp
from skim.errors import ConfigError
from tests.helpers.runs import FAST_DEV, compose_cfg


def test_block_features_match_a_hand_computation():
    # 6 positions in blocks of 2, the last a padding token (block 2 holds one real token); tokens 0-1 the question
    torch.manual_seed(0)
    real = torch.tensor([[True] * 5 + [False]])
    probs = torch.randn(1, 1, 6, 6).masked_fill(~real[:, None, None], float("-inf")).softmax(-1)  # as the model's
    hidden = torch.randn(1, 6, 3)
    question = torch.tensor([[True, True, False, False, False, False]])
    (layer,) = bp.block_features((probs,), (None, hidden), real, question, block_size=2)
    P = probs[0, 0]
    blocks = [[0, 1], [2, 3], [4]]  # the real tokens of each block
    for k, toks in enumerate(blocks):
        own_mass = sum(float(P[q, toks].sum()) for q in toks) / len(toks)
        own_max = sum(float(P[q, toks].max()) for q in toks) / len(toks)
        from_question = sum(float(P[q, toks].sum()) for q in (0, 1)) / 2
        to_question = sum(float(P[q, [0, 1]].sum()) for q in toks) / len(toks)
        assert layer["diagonal"][0, k].tolist() == pytest.approx([own_mass, own_max], rel=1e-5)
        assert layer["question"][0, k].tolist() == pytest.approx([from_question, to_question], rel=1e-5)
        assert layer["hidden"][0, k].tolist() == pytest.approx(hidden[0, toks].mean(0).tolist(), rel=1e-5)
        assert layer["position"][0, k].tolist() == pytest.approx([k, k / 3])


def test_probe_scores_find_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x, xd = rng.normal(size=(2000, 3)), rng.normal(size=(2000, 3))
    y, yd = (x[:, 1] > 0.5).astype(int), (xd[:, 1] > 0.5).astype(int)
    signal = bp.probe_scores((x, y), (xd, yd), recalls=(0.99,))
    assert signal["auc"] > 0.99 and signal["skip_at_recall"]["0.99"] > 0.95  # nearly every other block ranks below
    noise = bp.probe_scores((x, rng.integers(0, 2, 2000)), (xd, rng.integers(0, 2, 2000)), recalls=(0.5, 0.99))
    assert abs(noise["auc"] - 0.5) < 0.05
    assert abs(noise["skip_at_recall"]["0.5"] - 0.5) < 0.06 and noise["skip_at_recall"]["0.99"] < 0.05
    assert bp.probe_scores((x, np.zeros(2000, int)), (xd, yd)) is None  # one class: nothing to fit


def test_skip_share_with_tied_scores_is_read_at_the_first_threshold_reaching_the_recall():
    # one feature with 4 values; answers (y=1) at 3, 3, 2, 1 and the others at 2, 1, 0, 0, 0: the ROC points
    # (0, .5), (.2, .75), (.4, 1) lie on a line, and roc_curve's default drops the middle one, where recall 0.75 is reached
    x = np.array([3, 3, 2, 1, 2, 1, 0, 0, 0], dtype=float)[:, None]
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    assert bp.probe_scores((x, y), (x, y), recalls=(0.75, 1.0))["skip_at_recall"] == pytest.approx({"0.75": 0.8, "1.0": 0.6})


def test_command_writes_json_and_markdown(tmp_run_root):
    out = tmp_run_root / "probe"
    sizes = [o for o in FAST_DEV if o.startswith("data.") and "max_train" not in o]  # 16 training questions
    cfg = compose_cfg(["experiment=quickstart", "skim=none", *sizes, "data.max_train_samples=16"], config_name="block_probe",
                      output_dir=out)  # fmt: skip
    bp.run_block_probe(cfg)
    rec = json.loads((out / "block_probe.json").read_text())
    assert len(rec["layers"]) == cfg.model.config_overrides.num_hidden_layers and rec["train_blocks"] > 0
    for row in rec["layers"]:
        assert set(row["all_blocks"]) == set(row["context"]) == {*bp.FAMILIES, "all"}
        assert row["blocks"] > row["context_blocks"] > 0 and 0.0 < row["answer_share"] < 1.0
        assert all(0.0 <= v["auc"] <= 1.0 for v in row["all_blocks"].values())
        scored = [v for v in row["context"].values() if v is not None]
        assert scored and all(set(v["skip_at_recall"]) == {"0.95", "0.99"} for v in scored)
    text = (out / "block_probe.md").read_text()
    assert "| layer | AUC, context blocks: position | diagonal | question | hidden | all |" in text
    assert "context blocks skippable at answer recall 0.99" in text


@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=quickstart", "skim=blockskim"], "skim=none"),
    (["experiment=quickstart_cls", "skim=none"], "data.task=qa"),
    (["experiment=quickstart", "skim=none", "min_answer_tokens=0"], "min_answer_tokens"),
    (["experiment=quickstart", "skim=none", "recalls=[0.9,1.5]"], "recalls"),
])  # fmt: skip
def test_bad_setups_are_config_errors(overrides, message, tmp_run_root):
    cfg = compose_cfg(overrides, config_name="block_probe", output_dir=tmp_run_root / "x")
    with pytest.raises(ConfigError, match=message):
        bp.run_block_probe(cfg)
    assert not (tmp_run_root / "x" / "block_probe.json").exists()
