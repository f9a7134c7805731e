"""Progress that is visible both on a terminal and in a log file (nohup, SLURM, CI).

On a terminal this is Lightning's tqdm bar. When stdout is not a terminal, a tqdm bar is a stream of carriage
returns that only shows up when its refresh count comes round (a refresh rate of 50 steps meant minutes of silence
on CPU); there, one plain log line per ``interval_s`` seconds and one at the end of each epoch / validation say where
the run is, how fast it goes and, when the length is known, how long it still needs.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger("skim.progress")


class ProgressBar(TQDMProgressBar):
    """A tqdm bar on a terminal, a log line every ``interval_s`` seconds otherwise."""

    def __init__(self, refresh_rate: int = 1, interval_s: float = 30.0, process_position: int = 0, leave: bool = False):
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.interval_s = float(interval_s)
        self.log_lines = False
        self._phase_start = self._last_line = time.monotonic()
        self._paused = (self._phase_start, self._last_line)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # decided per run, not at import: the same process may run under a terminal and with redirected output
        self.log_lines = not _is_terminal(sys.stdout)

    @property
    def is_enabled(self) -> bool:
        return super().is_enabled and not self.log_lines

    def _lines_on(self) -> bool:
        # Lightning disables the bar on every rank but 0; the lines follow the same rule
        return self.log_lines and self._enabled

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        if self.log_lines:
            print(*args, sep=sep, **kwargs)
        else:
            super().print(*args, sep=sep, **kwargs)

    def _start_phase(self) -> None:
        self._phase_start = self._last_line = time.monotonic()

    def _line(self, what: str, n: int, total: float | None, metrics: dict | None = None) -> None:
        now = time.monotonic()
        known = total is not None and math.isfinite(total)
        if not (known and n >= total) and now - self._last_line < self.interval_s:
            return
        self._last_line = now
        per = (now - self._phase_start) / max(n, 1)
        if not known:  # an iterable dataset without a length
            where, eta = f"{n}", ""
        else:
            total = int(total)
            where = f"{n}/{total} ({100 * n // max(total, 1)}%)"
            eta = f", {_duration(per * (total - n))} left" if n < total else f", took {_duration(now - self._phase_start)}"
        shown = "".join(f", {k}={_fmt(v)}" for k, v in (metrics or {}).items() if k != "v_num")
        log.info("%s %s, %.2f s/it%s%s", what, where, per, eta, shown)

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._start_phase()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._lines_on():
            metrics = self.get_metrics(trainer, pl_module)
            self._line(f"epoch {trainer.current_epoch}: step", batch_idx + 1, self.total_train_batches, metrics)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_validation_start(trainer, pl_module)
        self._paused = (self._phase_start, self._last_line)
        self._start_phase()

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self._lines_on() and not trainer.sanity_checking:
            self._line("validation: batch", batch_idx + 1, self.total_val_batches_current_dataloader)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_validation_end(trainer, pl_module)
        # a validation inside an epoch neither resets the epoch's lines nor counts in its rate and ETA
        start, last = self._paused
        took = time.monotonic() - self._phase_start
        self._phase_start, self._last_line = start + took, last + took


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
