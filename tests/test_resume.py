"""Resume: a run interrupted mid-epoch and resumed from its checkpoint ends with the same weights and metrics as an
uninterrupted run (same seed): model, optimiser, scheduler, loop position, data order and RNG are all restored."""

from __future__ import annotations

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.callbacks import Callback

import skim.train as train_mod
from skim.utils.run import task_wrapper
from tests.conftest import SQUAD_DEV, require_shared
from tests.helpers.runs import compose_cfg

RUN = [
    "model=tiny", "model.config_overrides.hidden_size=32", "model.config_overrides.num_hidden_layers=2",
    "data=squad_local", f"data.train_file={SQUAD_DEV}", f"data.validation_file={SQUAD_DEV}",
    "data.max_train_samples=40", "data.max_eval_samples=16", "data.batch_size=4",
    "skim=transkimmer", "skim.coefficient_warmup=0.8", "trainer=cpu", "trainer.max_epochs=2", "final_eval=none", "seed=3",
    # both warm-ups (the learning rate's, the skim coefficient's) run past the crash: the resumed run continues them
    "optim.warmup_ratio=0.1",
    # the resumable checkpoint every 3 steps, so that one lands in the middle of the first epoch
    "callbacks.last_checkpoint.every_n_train_steps=3",
]


class Crash(Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.at_step:
            raise RuntimeError("simulated crash")


def _run(tmp, name, extra=(), crash_at=None, monkeypatch=None):
    GlobalHydra.instance().clear()
    cfg = compose_cfg([*RUN, *extra], output_dir=tmp / name)
    if crash_at is None:
        return train_mod.train(cfg)
    orig = train_mod.instantiate_group

    def with_crash(cfg, group):
        out = orig(cfg, group)
        if group == "callbacks":
            out.append(Crash(crash_at))
        return out

    monkeypatch.setattr(train_mod, "instantiate_group", with_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_mod.train(cfg)
    monkeypatch.setattr(train_mod, "instantiate_group", orig)
    return None


@pytest.mark.parametrize("grouped", [False, True], ids=["shuffled", "length-grouped"])
def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_run_root, monkeypatch, grouped):
    require_shared(SQUAD_DEV)
    group = [f"data.group_by_length={str(grouped).lower()}"]
    full = _run(tmp_run_root, "full", extra=group)
    _run(tmp_run_root, "crashed", extra=group, crash_at=7, monkeypatch=monkeypatch)  # crash after step 7; checkpoint at step 6
    ckpt = tmp_run_root / "crashed" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 6
    resumed = _run(tmp_run_root, "resumed", extra=[*group, f"ckpt_path={ckpt}"])
    GlobalHydra.instance().clear()
    a = torch.load(tmp_run_root / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_run_root / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"]
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=1e-6, msg=k)
    for k in ("val/em", "val/f1", "val/skim/kept_layer1", "val/loss"):
        assert resumed[k] == pytest.approx(full[k], abs=1e-5), k


def test_a_run_resumed_into_its_own_directory_continues_its_csv_log(tmp_run_root, monkeypatch):
    """hydra.run.dir=<run> ckpt_path=last: the CSV log keeps the steps before the interruption (Lightning's writer
    deleted them) and drops those logged after the checkpoint, which the resumed run logs again; the file then holds
    exactly the uninterrupted run's training rows."""
    import csv

    require_shared(SQUAD_DEV)
    every = ["trainer.log_every_n_steps=1"]
    _run(tmp_run_root, "full", extra=every)
    _run(tmp_run_root, "run", extra=every, crash_at=7, monkeypatch=monkeypatch)  # logged steps up to 7, checkpoint at 6
    with open(tmp_run_root / "run" / "csv" / "metrics.csv", "a") as file:
        file.write("0")  # a row cut short by a killed write: skipped
    _run(tmp_run_root, "run", extra=[*every, "ckpt_path=last"])
    GlobalHydra.instance().clear()

    def losses(name):
        with open(tmp_run_root / name / "csv" / "metrics.csv", newline="") as file:
            rows = [r for r in csv.DictReader(file) if r.get("train/loss")]
        return [(int(r["step"]), round(float(r["train/loss"]), 5)) for r in rows]

    full, resumed = losses("full"), losses("run")
    assert [step for step, _ in resumed] == sorted({step for step, _ in resumed})  # no step twice
    assert resumed == full and len(full) > 7


def test_resume_continues_the_wandb_run(tmp_run_root):
    require_shared(SQUAD_DEV)
    base = [o for o in RUN if "last_checkpoint" not in o] + ["logger=wandb", "trainer.max_epochs=1"]
    GlobalHydra.instance().clear()
    first = compose_cfg(base, output_dir=tmp_run_root / "first")
    task_wrapper(train_mod.train)(first)
    GlobalHydra.instance().clear()
    second = compose_cfg([*base, "trainer.max_epochs=2", f"ckpt_path={tmp_run_root / 'first' / 'checkpoints' / 'last.ckpt'}"],
                         output_dir=tmp_run_root / "second")
    metrics = task_wrapper(train_mod.train)(second)
    GlobalHydra.instance().clear()
    run_id = (tmp_run_root / "first" / "wandb_run_id").read_text()
    assert (tmp_run_root / "second" / "wandb_run_id").read_text() == run_id
    assert "val/f1" in metrics
