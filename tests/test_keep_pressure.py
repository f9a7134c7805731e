"""skim.keep_pressure: the per-layer task push and skim-loss pull on Transkimmer's keep decisions."""

from __future__ import annotations

import json

import pytest
import torch

import skim.keep_pressure as kp
from skim.errors import ConfigError
from tests.conftest import ROOT, ragged_batch
from tests.helpers.runs import compose_cfg


def _qa_module(minilm_path, **skim):
    from skim.tasks.qa_module import QAModule

    torch.manual_seed(0)
    return QAModule(
        model={"pretrained_name_or_path": minilm_path, "random_init": True,
               "config_overrides": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}},
        skim={"name": "transkimmer", **skim},
    )


def test_skim_pull_is_the_hand_computed_loss_gradient(minilm_path):
    # bias 50: every token is kept (Gumbel noise cannot flip it), so the skim loss c * mean_layers mean_b kept_b / real_b
    # pulls a token of example b entering skim layer j by c * (layers from j on) / (layers * B * real_b)
    module = _qa_module(minilm_path, skim_coefficient=0.3, bias_init=50.0)
    ids, mask = ragged_batch(4, 50, vocab=1000, min_len=20)
    batch = {"input_ids": ids, "attention_mask": mask, "start_positions": torch.tensor([3, 5, 7, 0]),
             "end_positions": torch.tensor([6, 6, 8, 0])}  # the last feature does not hold its answer ([CLS])
    rows = kp.keep_pressure(module, [batch])
    assert [r["layer"] for r in rows] == [0, 1, 2]
    real = mask.sum(1).double()
    for j, r in enumerate(rows):
        assert r["tokens"] == int((real - 1).sum())  # every real token but [CLS]
        per_token = 0.3 * (3 - j) / (3 * 4 * real)
        expected = float(((real - 1) * per_token).sum() / (real - 1).sum())
        assert r["skim_pull"] == pytest.approx(expected, rel=1e-5)
        assert r["net_keep"] == pytest.approx(r["task_keep"] - r["skim_pull"], rel=1e-6, abs=1e-12)
        assert r["task_abs"] > 0 and 0.0 <= r["share_task_wins"] <= 1.0
        # the gold-answer tokens alone: 4, 2, 2 and none of them, each pulled by its own example's per-token figure
        assert r["answer_tokens"] == 8
        assert r["answer_skim_pull"] == pytest.approx(float((torch.tensor([4, 2, 2, 0]) * per_token).sum() / 8), rel=1e-5)
        assert 0.0 <= r["answer_share_task_wins"] <= 1.0
        # the span's first and last tokens
        assert r["answer_ends_tokens"] == 6
        assert r["answer_ends_skim_pull"] == pytest.approx(float((torch.tensor([2, 2, 2, 0]) * per_token).sum() / 6), rel=1e-5)
    assert "| answer_tokens |" in kp.to_markdown(rows) and "| answer_ends_share_task_wins |" in kp.to_markdown(rows)


def test_command_writes_json_and_markdown(tmp_run_root):
    out = tmp_run_root / "kp"
    cfg = compose_cfg(["experiment=quickstart_cls", "skim=transkimmer", "n_batches=2", "data.batch_size=8"],
                      config_name="keep_pressure", output_dir=out)
    kp.run_keep_pressure(cfg)
    rec = json.loads((out / "keep_pressure.json").read_text())
    assert rec["n_batches"] == 2 and len(rec["layers"]) == cfg.model.config_overrides.num_hidden_layers
    assert all(r["tokens"] > 0 and r["skim_pull"] > 0 and "answer_tokens" not in r for r in rec["layers"])  # no answers
    assert (out / "keep_pressure.md").read_text().startswith("| layer | tokens |")


def test_dense_strategy_is_a_config_error(tmp_run_root):
    cfg = compose_cfg(["experiment=quickstart_cls", "skim=none"], config_name="keep_pressure", output_dir=tmp_run_root / "x")
    with pytest.raises(ConfigError, match="skim=transkimmer"):
        kp.run_keep_pressure(cfg)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*transkimmer*.yaml")))
def test_transkimmer_experiments_compose_for_keep_pressure(experiment, tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_cfg([f"experiment={experiment}"], config_name="keep_pressure", output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.skim.name == "transkimmer" and cfg.module._target_.startswith("skim.tasks.")
    assert cfg.task_name == "keep_pressure"  # diagnostics never land among the experiment's training runs
