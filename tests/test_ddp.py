"""Distributed evaluation is exact: one and two CPU processes (gloo DDP) give the same metrics and predictions."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_DATA, SQUAD_DEV, require_shared
from tests.helpers.runs import run_cli

TINY = ["model=tiny", "model.config_overrides.hidden_size=32", "model.config_overrides.num_hidden_layers=2"]


def _env(root):
    return {"SKIM_ROOT": str(root), "SKIM_SHARED_DATA": str(SHARED_DATA)}


def _run(entry, args, root, run_dir):
    res = run_cli(["-m", f"skim.{entry}", *args, f"hydra.run.dir={run_dir}"], cwd=root, env_extra=_env(root))
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def _compare(one, two, exact_keys):
    for k in exact_keys:
        assert one[k] == pytest.approx(two[k], rel=1e-6, abs=1e-9), k


@pytest.mark.slow
def test_qa_eval_one_vs_two_processes(tmp_path):
    require_shared(SQUAD_DEV)
    # 37 examples -> an odd number of features: the two ranks get different counts
    common = [*TINY, "data=squad_local", f"data.train_file={SQUAD_DEV}", f"data.validation_file={SQUAD_DEV}",
              "data.max_eval_samples=37", "data.eval_batch_size=4", "skim=blockskim", "skim.threshold=0.5"]
    _run("train", [*common, "data.max_train_samples=32", "trainer=cpu", "trainer.max_epochs=1"], tmp_path, tmp_path / "train")
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    one = _run("eval", [*common, f"ckpt_path={ckpt}", "trainer=cpu"], tmp_path, tmp_path / "e1")
    two = _run("eval", [*common, f"ckpt_path={ckpt}", "trainer=ddp_cpu"], tmp_path, tmp_path / "e2")
    assert (tmp_path / "e1" / "predictions.json").read_bytes() == (tmp_path / "e2" / "predictions.json").read_bytes()
    assert len(json.loads((tmp_path / "e1" / "predictions.json").read_text())) == 37
    keys = [k for k in one if k.startswith(("val/em", "val/f1", "val/skim/", "val/flops/skim", "val/flops/dense_gflops", "val/flops/speedup"))
            and "padded" not in k]
    _compare(one, two, keys)


@pytest.mark.slow
def test_classification_eval_one_vs_two_processes(tmp_path):
    require_shared(SHARED_DATA)
    common = [*TINY, "data=sst2_local", "data.max_eval_samples=37", "data.eval_batch_size=4", "skim=transkimmer", "skim.bias_init=0.0"]
    _run("train", [*common, "data.max_train_samples=32", "trainer=cpu", "trainer.max_epochs=1"], tmp_path, tmp_path / "train")
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    one = _run("eval", [*common, f"ckpt_path={ckpt}", "trainer=cpu"], tmp_path, tmp_path / "e1")
    two = _run("eval", [*common, f"ckpt_path={ckpt}", "trainer=ddp_cpu"], tmp_path, tmp_path / "e2")
    assert one["val/skim/kept_layer1"] < 1.0  # the predictors really skim
    keys = [k for k in one if k.startswith(("val/acc", "val/skim/", "val/flops/skim", "val/flops/dense_gflops", "val/flops/speedup"))
            and "padded" not in k]
    _compare(one, two, keys)


@pytest.mark.slow
def test_length_grouped_training_under_ddp(tmp_path):
    require_shared(SQUAD_DEV)
    args = [*TINY, "data=squad_local", f"data.train_file={SQUAD_DEV}", f"data.validation_file={SQUAD_DEV}",
            "data.max_train_samples=48", "data.max_eval_samples=8", "data.batch_size=8", "data.group_by_length=true",
            "trainer=ddp_cpu", "trainer.max_epochs=2", "final_eval=none"]
    metrics = _run("train", args, tmp_path, tmp_path / "ddp")
    assert "val/f1" in metrics
