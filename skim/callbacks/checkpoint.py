"""The two checkpoints of a run: ``last.ckpt`` (the full training state, also written when SIGTERM stops a fit) and the
best *validated* weights (weights only, written after a validation with that validation's score).

Lightning stops a fit on SIGTERM at a batch boundary (after the step, its logging and any scheduled checkpoint), so
the state saved here is that of a finished step and a resume from it continues exactly (``tests/test_failures.py``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` at every epoch end, every ``every_n_train_steps`` steps if set, and at SIGTERM."""

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None, **kwargs: Any):
        super().__init__(dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps, **kwargs)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == TrainerFn.FITTING:
            path = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
            trainer.save_checkpoint(path)
            self.last_model_path = str(path)


class BestCheckpoint(ModelCheckpoint):
    """The best validated weights, also across a resume into a new run directory.

    Lightning's ModelCheckpoint forgets the best score when the directory changes, so the first validation after such
    a resume would become "best" however bad it was. This one keeps the score and the earlier run's best file (which
    Lightning never deletes outside this directory) until a validation beats it.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        moved = state_dict.get("dirpath", self.dirpath) != self.dirpath
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        if moved:
            self.best_model_score = state_dict["best_model_score"]
            self.best_k_models = dict(state_dict.get("best_k_models", {}))
            self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
            self.kth_value = state_dict.get("kth_value", self.kth_value)
