"""Lightning's CSV logger, continued by a run resumed into its own directory (``hydra.run.dir=<run> ckpt_path=last``).

Lightning's writer deletes the ``metrics.csv`` it finds, and with it the log of every step before the interruption
(Lightning 2.6 has no option to append). When ``resuming`` (set by ``skim.train`` when it resumes from a checkpoint of
this run directory), the earlier rows are kept up to the first step the resumed run logs; rows the interrupted run
logged from that step on are dropped, since the resumed run logs those steps again. The file then reads as one run. A
run that does not resume replaces the file, as Lightning's does."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def _step(row: dict) -> float | None:
    try:
        return float(row.get("step"))
    except (TypeError, ValueError):  # a row cut short by a killed write
        return None


class _Writer(ExperimentWriter):
    _earlier: str | None = None

    def __init__(self, log_dir: str, keep_earlier: bool):
        self.keep_earlier = keep_earlier
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self.keep_earlier:
            return super()._check_log_dir_exists()
        path = self.metrics_file_path
        if self._fs.isfile(path):  # renamed, not deleted: a run killed before its first write keeps the old log there
            self._earlier = path + ".before_resume"
            self._fs.mv(path, self._earlier)
        return None

    def save(self) -> None:
        earlier = self._earlier
        if earlier is None or not self.metrics:
            return super().save()
        first = min(_step(row) for row in self.metrics)
        with self._fs.open(earlier, "r", newline="") as file:
            rows = [row for row in csv.DictReader(file) if (step := _step(row)) is not None and step < first]
        self.metrics = [{k: v for k, v in row.items() if k is not None} for row in rows] + self.metrics
        super().save()
        self._fs.rm_file(earlier)
        self._earlier = None
        return None


class CSVLogger(_CSVLogger):
    resuming = False

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _Writer(self.log_dir, keep_earlier=self.resuming)
        return self._experiment
