"""Every experiment config runs: a fast dev run on slices of the real data, on CPU (GPU rows use trainer=cpu here).

The papers' BERT-base rows need the Hub (weights and data) and are only composition-tested (tests/test_configs.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from skim.train import train
from skim.utils.run import task_wrapper
from tests.conftest import SHARED_DATA, require_shared
from tests.helpers.runs import CONF, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml") if "bert-base" not in p.stem)
SLICE = ["debug=fdr", "trainer=cpu", "data.batch_size=4", "data.eval_batch_size=4", "data.max_train_samples=8",
         "data.max_eval_samples=8", "logger=csv"]


@pytest.fixture(autouse=True)
def _clear_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_fast_dev_run(experiment, tmp_run_root):
    if "quickstart" not in experiment:
        require_shared(SHARED_DATA)
    cfg = compose_cfg([f"experiment={experiment}", *SLICE], output_dir=tmp_run_root / "run")
    assert cfg.trainer.accelerator == "cpu"
    metrics = task_wrapper(train)(cfg)
    assert cfg.data.monitor in metrics
    assert "val/skim/kept_layer0" in metrics
