"""skim.oracle: block labels and oracle speed-ups on the real SQuAD dev file, and a hand-checked feature."""

from __future__ import annotations

import json

import pytest

import skim.oracle as oracle_mod
from skim.metrics.flops import EncoderShape
from tests.conftest import SQUAD_DEV, require_shared
from tests.helpers.runs import compose_cfg


def test_feature_blocks_hand_checked():
    # 20 real tokens in blocks of 8: [CLS] q q [SEP] context..., answer at 6..9, closing [SEP] at 19, 4 padding
    feat = {
        "attention_mask": [1] * 20 + [0] * 4,
        "protect_mask": [1, 1, 1, 1] + [0] * 15 + [1] + [0] * 4,
        "start_positions": 6,
        "end_positions": 9,
    }
    b = oracle_mod.feature_blocks(feat, 8)
    assert b["real"].tolist() == [8, 8, 4]
    assert b["protect"].tolist() == [True, False, False]  # the closing [SEP] alone does not protect a block
    assert b["answer"].tolist() == [2, 2, 0]
    assert bool(b["in_window"]) and int(b["span"]) == 4
    unanswerable = {**feat, "start_positions": 0, "end_positions": 0}
    assert oracle_mod.feature_blocks(unanswerable, 8)["answer"].sum() == 0


def test_oracle_report_orders_the_oracles():
    feats = [
        {"attention_mask": [1] * n + [0] * (96 - n), "protect_mask": [1] * 10 + [0] * 86, "start_positions": s, "end_positions": s}
        for n, s in ((96, 50), (40, 20), (70, 12))
    ]
    rep = oracle_mod.oracle_report(feats, {"t": EncoderShape(64, 128, 4, 4)}, 96, 32, [1, 2])
    assert rep["labels"]["one_token_answers"] == 1.0
    assert rep["labels"]["features_with_positive_block_rule2"] == 0.0  # one-token answers never label a block (rule 2)
    sp = rep["speedups"]["t"]
    assert sp["answer_after_1_vs_dynamic"] > sp["answer_after_2_vs_dynamic"] > 1.0
    assert sp["answer_after_1_vs_padded"] > sp["answer_after_1_vs_dynamic"]
    assert sp["answer_after_1_vs_padded"] > sp["padding_after_1_vs_padded"] > 1.0


def test_oracle_command_on_real_dev_slice(tmp_run_root):
    require_shared(SQUAD_DEV)
    cfg = compose_cfg(["data.max_eval_samples=60"], config_name="oracle", output_dir=tmp_run_root / "oracle")
    oracle_mod.run_oracle(cfg)
    rep = json.loads((tmp_run_root / "oracle" / "oracle.json").read_text())
    lab = rep["labels"]
    assert lab["features"] == rep["data_info"]["eval_features"] >= 60
    assert 0 < lab["features_with_positive_block_rule2"] <= lab["features_with_positive_block_rule1"] == pytest.approx(1.0, abs=0.05)
    assert set(rep["speedups"]) == {"minilm", "bert-base"}
    assert (tmp_run_root / "oracle" / "oracle.md").read_text().startswith("# Block-skim oracle")
