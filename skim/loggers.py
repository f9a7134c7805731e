"""Lightning's CSV logger, continued by a run resumed into its own directory (``hydra.run.dir=<run> ckpt_path=last``).

Lightning's writer deletes the ``metrics.csv`` it finds, and with it the log of every step before the interruption.
When ``resuming`` (set by ``skim.train`` when it resumes from a checkpoint), the earlier rows are kept up to the step
the run resumes from; the rows logged after that step and before the interruption are dropped, since the resumed run
logs those steps again. The file then reads as one run. A run that does not resume replaces the file, as Lightning's."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self._earlier = self._fs.isfile(self.metrics_file_path)

    def save(self) -> None:
        if self._earlier and self.metrics:
            self._earlier = False
            first = min(float(row["step"]) for row in self.metrics)
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                kept = [row for row in csv.DictReader(file) if float(row["step"]) < first]
            self._fs.rm_file(self.metrics_file_path)
            self.metrics = kept + self.metrics  # one file again; the header is the union of both parts' keys
        super().save()


class CSVLogger(_CSVLogger):
    resuming = False

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = (_ContinuingWriter if self.resuming else ExperimentWriter)(log_dir=self.log_dir)
        return self._experiment
