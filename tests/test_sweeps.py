"""Hydra multirun: one run dir and one results row per job; a failing job does not stop the others."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_DATA, SQUAD_DEV, require_shared
from tests.helpers.runs import run_cli

FAST = [
    "model=tiny", "model.config_overrides.hidden_size=32", "model.config_overrides.num_hidden_layers=2",
    "data=squad_local", f"data.validation_file={SQUAD_DEV}", "data.max_train_samples=16", "data.max_eval_samples=16",
    "data.batch_size=8", "trainer=cpu", "trainer.max_epochs=1", "logger=many",
]


def test_multirun_jobs_are_isolated(tmp_path):
    require_shared(SQUAD_DEV)
    sweep = tmp_path / "sweep"
    res = run_cli(
        ["-m", "skim.train", "-m", *FAST, f"data.train_file=/nonexistent.json,{SQUAD_DEV}", "skim=none,blockskim", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env_extra={"SKIM_ROOT": str(tmp_path), "SKIM_SHARED_DATA": str(SHARED_DATA)},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    finished = [j for j in jobs if (j / "metrics.json").exists()]
    failed = [j for j in jobs if (j / "FAILED").exists()]
    assert len(finished) == 2 and len(failed) == 2
    assert all("not found" in (j / "FAILED").read_text() for j in failed)
    rows = [json.loads(x) for x in (tmp_path / "logs" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["skim"] for r in rows) == ["blockskim", "none"]
    assert len({r["run_dir"] for r in rows}) == 2
    # one offline W&B run per finished job, never shared
    wandb_runs = [list((j / "wandb").glob("offline-run-*")) for j in finished]
    assert all(len(w) == 1 for w in wandb_runs)
    assert wandb_runs[0][0].name != wandb_runs[1][0].name


def test_objective_is_maximised_for_a_score_and_for_a_loss():
    # a loss used to enter as is, so the maximising sweep searched for the worst validation loss
    from omegaconf import OmegaConf

    from skim.train import add_objective

    flops = {"val/flops/skim_gflops": 1.0, "val/flops/dense_gflops": 4.0}
    for metric, value, expected in (("val/f1", 80.0, 80.0 - 5.0), ("val/loss", 0.5, -0.5 - 5.0)):
        metrics = {metric: value, **flops}
        add_objective(OmegaConf.create({"objective": {"metric": metric, "flops_penalty": 20.0}}), metrics)
        assert metrics["val/objective"] == pytest.approx(expected), metric


@pytest.mark.slow
def test_optuna_search_runs_trials(tmp_path):
    require_shared(SQUAD_DEV)
    sweep = tmp_path / "sweep"
    res = run_cli(
        ["-m", "skim.train", "-m", "hparams_search=blockskim_optuna", *FAST, f"data.train_file={SQUAD_DEV}", "skim=blockskim",
         "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep}", "logger=csv"],
        cwd=tmp_path,
        env_extra={"SKIM_ROOT": str(tmp_path), "SKIM_SHARED_DATA": str(SHARED_DATA)},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "skim.threshold" in best
    rows = [json.loads(x) for x in (tmp_path / "logs" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("val/objective" in r["metrics"] for r in rows)
