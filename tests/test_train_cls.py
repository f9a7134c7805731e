"""Classification on the real stack: tiny-BERT fast dev runs on slices of every local dataset, Transkimmer on top."""

from __future__ import annotations

import pytest
from hydra.core.global_hydra import GlobalHydra

from skim.train import train
from skim.utils.run import task_wrapper
from tests.conftest import SHARED_DATA, require_shared
from tests.helpers.runs import compose_cfg

TINY = [
    "model=tiny",
    "model.config_overrides.hidden_size=32",
    "model.config_overrides.num_hidden_layers=2",
    "model.config_overrides.intermediate_size=64",
    "trainer=cpu",
    "data.max_train_samples=32",
    "data.max_eval_samples=32",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "data.max_seq_length=128",
]
EXPECTED_METRIC = {
    "cola": "val/mcc", "sst2": "val/acc", "mrpc": "val/f1", "rte": "val/acc", "stsb": "val/pearson",
    "wnli": "val/acc", "qnli": "val/acc", "imdb": "val/acc", "20news": "val/acc",
}


@pytest.fixture(autouse=True)
def _clear_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def _run(overrides, tmp_run_root):
    cfg = compose_cfg(overrides, output_dir=tmp_run_root / "run")
    return task_wrapper(train)(cfg)


@pytest.mark.parametrize("name", sorted(EXPECTED_METRIC))
def test_fast_dev_run_on_each_dataset(name, tmp_run_root):
    require_shared(SHARED_DATA)
    extra = []
    if name == "qnli":  # no QNLI train file exists locally: train on the dev slice
        extra = [f"data.train_file={SHARED_DATA}/glue/QNLI/dev.tsv"]
    metrics = _run([*TINY, f"data={name}_local", "debug=fdr", *extra], tmp_run_root)
    assert EXPECTED_METRIC[name] in metrics, sorted(metrics)
    assert "val/skim/kept_layer0" in metrics and "val/flops/speedup" in metrics


@pytest.mark.parametrize("name", ["sst2", "imdb"])
def test_transkimmer_trains_and_skims_on_classification(name, tmp_run_root):
    require_shared(SHARED_DATA)
    metrics = _run(
        [*TINY, f"data={name}_local", "skim=transkimmer", "skim.bias_init=0.0", "trainer.max_epochs=1",
         "data.max_train_samples=64", "optim.lr=1e-3"],
        tmp_run_root,
    )
    assert 0.0 <= metrics["val/acc"] <= 100.0
    # with a neutral predictor init the (expected-count) decisions drop tokens: the cost accounting shows it
    assert metrics["val/skim/kept_layer1"] < 1.0
    assert metrics["val/flops/skim_gflops"] < metrics["val/flops/dense_gflops"] * 1.2
    assert (tmp_run_root / "run" / "metrics.json").exists()


def test_blockskim_on_classification_is_refused(tmp_run_root):
    from skim.errors import ConfigError
    from skim.tasks.base_module import validate_config

    cfg = compose_cfg([*TINY, "data=sst2_local", "skim=blockskim"], output_dir=tmp_run_root / "run")
    with pytest.raises(ConfigError, match="does not support 'cls'"):
        validate_config(cfg)
