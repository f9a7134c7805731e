"""Failure behaviour: a signal, a bad checkpoint or a missing option ends a run with one line, the right exit code,
a FAILED marker and no result files; checkpoints load weights-only; final_eval=best evaluates validated weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.callbacks import Callback

import skim.train as train_mod
from skim.utils.run import task_wrapper
from tests.conftest import SQUAD_DEV, require_shared
from tests.helpers.runs import ROOT, compose_cfg, run_cli

TINY = [
    "model=tiny", "model.config_overrides.hidden_size=32", "model.config_overrides.num_hidden_layers=2",
    "data=squad_local", f"data.train_file={SQUAD_DEV}", f"data.validation_file={SQUAD_DEV}",
    "data.max_train_samples=40", "data.max_eval_samples=16", "data.batch_size=4", "trainer=cpu", "seed=3",
]


def _cfg(overrides, out, name="train"):
    GlobalHydra.instance().clear()
    return compose_cfg(overrides, config_name=name, output_dir=out)


def _one_line_error(capsys, fn, cfg, code=2) -> str:
    with pytest.raises(SystemExit) as exc:
        task_wrapper(fn)(cfg)
    assert exc.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("skim: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def _evil_checkpoint(path, monkeypatch):
    """A checkpoint whose unpickling runs code (it would create ``<path>.pwned``). Torch's default is made unsafe, as
    before torch 2.6, so that only an explicit ``weights_only=True`` at every load keeps the payload from running."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {path}.pwned",))

    torch.save({"state_dict": {}, "x": Payload()}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


# ---------------------------------------------------------------------------------------------------------- SIGTERM


def test_sigterm_to_a_real_training_process(tmp_path):
    """A real SIGTERM mid-run: exit 143, FAILED names the step and the checkpoint to resume from, last.ckpt holds that
    step, and the predictions of the validation before the signal are gone."""
    require_shared(SQUAD_DEV)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "SKIM_ROOT": str(tmp_path)}
    args = [*TINY, "trainer.max_epochs=1000", "+trainer.val_check_interval=3", f"hydra.run.dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "skim.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "predictions.json").exists():  # a validation has finished: there is something to leave behind
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "no validation within 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    failed = (out / "FAILED").read_text()
    last = out / "checkpoints" / "last.ckpt"
    assert failed.startswith("RunInterrupted: interrupted by SIGTERM at step ")
    assert failed.strip().endswith(f"resume with ckpt_path={last}")
    step = int(failed.split("at step ")[1].split(";")[0])
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == step
    assert not (out / "predictions.json").exists() and not (out / "metrics.json").exists()
    assert stderr.strip().splitlines()[-1].startswith("skim: error: interrupted by SIGTERM")


class SigtermAt(Callback):
    """Sends this process a real SIGTERM after a given step, as a scheduler would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_the_sigterm_checkpoint_resumes_exactly(tmp_run_root, monkeypatch):
    """last.ckpt written at the signal (mid-epoch, no periodic checkpoint) resumes to the uninterrupted run's weights."""
    require_shared(SQUAD_DEV)
    run = [*TINY, "skim=transkimmer", "trainer.max_epochs=2", "final_eval=none", "optim.warmup_ratio=0.1"]
    full = task_wrapper(train_mod.train)(_cfg(run, tmp_run_root / "full"))

    orig = train_mod.instantiate_group
    monkeypatch.setattr(train_mod, "instantiate_group",
                        lambda cfg, group: orig(cfg, group) + ([SigtermAt(7)] if group == "callbacks" else []))
    with pytest.raises(SystemExit) as exc:
        task_wrapper(train_mod.train)(_cfg(run, tmp_run_root / "killed"))
    assert exc.value.code == 143
    monkeypatch.setattr(train_mod, "instantiate_group", orig)
    last = tmp_run_root / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 7  # mid-epoch: 10 steps per epoch

    resumed = task_wrapper(train_mod.train)(_cfg([*run, f"ckpt_path={last}"], tmp_run_root / "resumed"))
    a = torch.load(tmp_run_root / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_run_root / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 20
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=1e-6, msg=k)
    assert resumed["val/f1"] == pytest.approx(full["val/f1"], abs=1e-5)


# ------------------------------------------------------------------------------------------------- bad checkpoints


@pytest.mark.parametrize("kind", ["missing", "garbage", "pickle"])
@pytest.mark.parametrize("option", ["ckpt_path", "model.init_checkpoint"])
def test_bad_train_checkpoint_is_one_line_before_any_data(tmp_run_root, capsys, monkeypatch, kind, option):
    ckpt = tmp_run_root / "x.ckpt"
    if kind == "garbage":
        ckpt.write_text("not a checkpoint")
    elif kind == "pickle":
        _evil_checkpoint(ckpt, monkeypatch)
    # the data file does not exist either: the checkpoint must be the first thing checked
    cfg = _cfg(["model=tiny", "data=squad_local", "data.train_file=/nonexistent.json", f"{option}={ckpt}"], tmp_run_root / "run")
    line = _one_line_error(capsys, train_mod.train, cfg)
    assert f"{option} {ckpt}" in line
    assert "weights_only" not in line  # never advise unpickling an untrusted file
    assert ("not found" in line) == (kind == "missing")
    assert (tmp_run_root / "run" / "FAILED").exists()
    assert not (tmp_run_root / "x.ckpt.pwned").exists()


def test_weights_only_checkpoint_cannot_resume(tmp_run_root, capsys):
    require_shared(SQUAD_DEV)
    task_wrapper(train_mod.train)(_cfg([*TINY, "trainer.max_epochs=1"], tmp_run_root / "first"))
    best = next((tmp_run_root / "first" / "checkpoints").glob("best_*.ckpt"))
    line = _one_line_error(capsys, train_mod.train, _cfg([*TINY, f"ckpt_path={best}"], tmp_run_root / "second"))
    assert "weights-only checkpoint cannot resume" in line and "last.ckpt" in line


def test_eval_and_benchmark_refuse_bad_checkpoints(tmp_run_root, capsys, monkeypatch):
    from skim.benchmark import benchmark
    from skim.eval import evaluate

    bad = tmp_run_root / "evil.ckpt"
    _evil_checkpoint(bad, monkeypatch)
    line = _one_line_error(capsys, evaluate, _cfg(["model=tiny", "data=squad_local", f"ckpt_path={bad}"], tmp_run_root / "e", "eval"))
    assert f"ckpt_path {bad}: not a skim checkpoint" in line and "weights_only" not in line
    line = _one_line_error(capsys, benchmark, _cfg(["model=tiny", "data=squad_local", f"ckpt_path={bad}"], tmp_run_root / "b0", "benchmark"))
    assert f"ckpt_path {bad}: not a skim checkpoint" in line
    assert not (tmp_run_root / "evil.ckpt.pwned").exists()
    line = _one_line_error(capsys, evaluate, _cfg(["model=tiny", "data=squad_local"], tmp_run_root / "e2", "eval"))
    assert line == "skim: error: ckpt_path is required: python -m skim.eval ckpt_path=<run>/checkpoints/last.ckpt [overrides]"
    missing = tmp_run_root / "missing.ckpt"
    line = _one_line_error(capsys, benchmark, _cfg(["model=tiny", "data=squad_local", f"ckpt_path={missing}"], tmp_run_root / "b", "benchmark"))
    assert line == f"skim: error: ckpt_path {missing}: checkpoint file not found"


def test_eval_without_checkpoint_from_the_command_line(tmp_path):
    res = run_cli(["-m", "skim.eval", "model=tiny", "data=squad_local"], cwd=tmp_path, env_extra={"SKIM_ROOT": str(tmp_path)})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("skim: error: ckpt_path is required")
    assert "Traceback" not in res.stderr


# ------------------------------------------------------------------------------------------------- final_eval=best


def test_final_eval_best_is_validated_weights_and_recorded(tmp_run_root):
    """The best checkpoint is written only after a validation: evaluating it again gives the score it was saved with,
    and metrics.json says which checkpoint (path, step) the final metrics come from."""
    require_shared(SQUAD_DEV)
    out = tmp_run_root / "run"
    metrics = task_wrapper(train_mod.train)(_cfg([*TINY, "trainer.max_epochs=3", "final_eval=best", "optim.lr=1e-3"], out))
    final = json.loads((out / "metrics.json").read_text())["final_eval"]
    assert final["weights"] == "best" and final["monitor"] == "val/f1"
    assert final["path"].startswith(str(out / "checkpoints" / "best_"))
    assert final["step"] in (10, 20, 30)  # an epoch end, where validation ran
    assert metrics["val/f1"] == pytest.approx(final["score"], abs=1e-6)
    # the best checkpoint holds weights only (a third of the full last.ckpt); last.ckpt is the resumable one
    best = torch.load(final["path"], weights_only=True)
    assert "optimizer_states" not in best and "optimizer_states" in torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)


def test_best_checkpoint_survives_a_resume_into_a_new_directory(tmp_path):
    """Lightning forgets the best score when the run directory changes, so a worse first validation after the resume
    would replace the best weights; BestCheckpoint keeps the earlier run's best until a validation beats it."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from skim.callbacks.checkpoint import BestCheckpoint

    old = tmp_path / "old" / "checkpoints"
    state = {
        "dirpath": str(old), "monitor": "val/f1", "best_model_score": torch.tensor(50.0),
        "best_model_path": str(old / "best.ckpt"), "best_k_models": {str(old / "best.ckpt"): torch.tensor(50.0)},
        "kth_best_model_path": str(old / "best.ckpt"), "kth_value": torch.tensor(50.0),
    }
    trainer = pl.Trainer(logger=False, enable_progress_bar=False)
    plain = ModelCheckpoint(dirpath=tmp_path / "new", monitor="val/f1", mode="max", save_top_k=1)
    plain.load_state_dict(dict(state))
    assert plain.check_monitor_top_k(trainer, torch.tensor(10.0))  # the bug: 10 would become "best"
    best = BestCheckpoint(dirpath=tmp_path / "new", monitor="val/f1", mode="max", save_top_k=1)
    best.load_state_dict(dict(state))
    assert best.best_model_path == str(old / "best.ckpt") and float(best.best_model_score) == 50.0
    assert not best.check_monitor_top_k(trainer, torch.tensor(10.0))
    assert best.check_monitor_top_k(trainer, torch.tensor(60.0))


@pytest.mark.parametrize(("override", "message"), [
    ("batch_sizes=[abc]", "batch_sizes: 'abc' is not an integer >= 1"),
    ("batch_sizes=[0]", "batch_sizes: 0 is not an integer >= 1"),
    ("batch_sizes=4", "batch_sizes must be a non-empty list"),
    ("num_batches=-1", "num_batches: -1 is not an integer >= 1"),
    ("repeats=0", "repeats: 0 is not an integer >= 1"),
    ("dtypes=[fp64]", "dtypes: unknown 'fp64'"),
    ("dense_attention=[flash]", "dense_attention: unknown 'flash'"),
    ("skim_attention=[flash]", "skim_attention: unknown 'flash'"),
    ("calibrate_keep_ratio=1.5", "calibrate_keep_ratio must be a number in (0, 1)"),
    ("skim=blockskim calibrate_keep_ratio=0.5 skim.layer_thresholds=[0,0]", "unset skim.layer_thresholds"),
])
def test_benchmark_options_are_checked_before_any_data(tmp_run_root, capsys, override, message):
    from skim.benchmark import benchmark

    cfg = _cfg(["model=tiny", "data=squad_local", "data.validation_file=/nonexistent.json", *override.split()], tmp_run_root / "b", "benchmark")
    assert message in _one_line_error(capsys, benchmark, cfg)


def test_unknown_scheduler_is_one_line_before_any_data(tmp_run_root, capsys):
    cfg = _cfg([*TINY, "data.validation_file=/nonexistent.json", "optim.scheduler=cosine_annealing"], tmp_run_root / "s")
    assert "optim.scheduler must be none or one of transformers' linear" in _one_line_error(capsys, train_mod.train, cfg)


@pytest.mark.parametrize(("override", "message"), [
    ("optim.skim_lr=0", "optim.skim_lr must be null (optim.lr) or a learning rate > 0, got 0"),
    ("optim.skim_lr=-1e-3", "optim.skim_lr must be null (optim.lr) or a learning rate > 0, got -0.001"),
    ("optim.skim_lr=abc", "optim.skim_lr must be a number or null, got 'abc' (str)"),
    ("optim.skim_lr=true", "optim.skim_lr must be a number or null, got True (bool)"),
    # these failed inside the scheduler or the seeding, with a traceback, or (final_eval) were taken as "last"
    ("optim.lr=abc", "optim.lr must be a number, got 'abc' (str)"),
    ("optim.lr=0", "optim.lr must be a number > 0, got 0"),
    ("optim.warmup_ratio=1.5", "optim.warmup_ratio must be in [0, 1] (a share of the steps), got 1.5"),
    ("optim.weight_decay=-1", "optim.weight_decay must be a number >= 0, got -1"),
    ("+optim.momentum=0.9", "unknown optim option(s) 'momentum' (known: adam_eps, lr, scheduler, skim_lr"),
    ("seed=abc", "seed must be an integer or null, got 'abc' (str)"),
    ("final_eval=latest", "final_eval must be one of best, last, none, got 'latest'"),
    ("evaluation.n_best_size=abc", "evaluation.n_best_size must be an integer, got 'abc' (str)"),
    ("evaluation.max_answer_length=0", "evaluation.max_answer_length must be at least 1, got 0"),
    ("+evaluation.nbest=5", "unknown evaluation option(s) 'nbest' (known: max_answer_length, n_best_size"),
    ("+model.dropout=0.2", "unknown model option(s) 'dropout' (known: attn_implementation, config_overrides"),
    ("model.random_init=maybe", "model.random_init must be true or false, got 'maybe' (str)"),
    ("model.config_overrides.num_hidden_layers=abc", "Field 'num_hidden_layers' expected int, got str (value: 'abc')"),
    # refused by the class the option configures, when it is built: one line naming the option's node
    ("callbacks.model_checkpoint.save_top_k=abc", "callbacks.model_checkpoint: TypeError: '<' not supported"),
    # Lightning would skip the final evaluation too, and the run would end without a metric and without saying so
    ("+trainer.limit_val_batches=0", "trainer.limit_val_batches=0 evaluates nothing, but final_eval=best asks for"),
    # these failed inside Hydra or Lightning with a traceback
    ("data._target_=skim.data.nope.X", "data._target_='skim.data.nope.X' cannot be imported (No module named 'skim.data.nope')"),
    ("data._target_=builtins.dict", "data._target_='builtins.dict' is not a SkimDataModule (the data config's class)"),
    ("module._target_=skim.tasks.cls_module.ClassificationModule", "serves task 'cls', but data._target_="),
    ("data._target_=skim.data.", "data._target_='skim.data.' cannot be imported (Error loading 'skim.data.': invalid"),
    ("+module.foo=1", "unknown module option(s) 'foo' for QAModule (known: add_pooling_layer, evaluation, model, optim,"),
    ("data.task=foo", "skim=none does not support 'foo' tasks (it supports: qa, cls)"),
])  # fmt: skip
def test_bad_run_options_are_one_line_before_any_data(tmp_run_root, capsys, override, message):
    cfg = _cfg([*TINY, "data.validation_file=/nonexistent.json", override], tmp_run_root / "s")
    assert message in _one_line_error(capsys, train_mod.train, cfg)


def test_only_a_refused_argument_becomes_a_config_error(tmp_path):
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    from skim.errors import ConfigError
    from skim.utils.run import instantiate_option

    bad = OmegaConf.create({"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "save_top_k": "abc"})
    with pytest.raises(ConfigError, match=r"^callbacks\.best: TypeError: '<' not supported"):
        instantiate_option(bad, "callbacks.best")
    # any other failure (here an OSError, as a bug or the machine would raise) keeps its traceback
    with pytest.raises(InstantiationException):
        instantiate_option(OmegaConf.create({"_target_": "os.listdir", "path": str(tmp_path / "missing")}), "x")
