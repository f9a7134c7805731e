"""W&B beyond scalars (enabled by ``logger=wandb`` / ``logger=many``; offline with ``WANDB_MODE=offline``).

* ``define_metric``: each run's summary holds the best validation score (``val/f1``, ``val/em``, ``val/acc``, the
  data's monitor ...: ``{"max": ...}``), the lowest ``val/loss`` and the *final* speed-up and kept ratio;
* after every validation: ``val/skim/kept_ratio_table`` (a ``wandb.Table`` of the tokens entering each layer / real
  tokens, with and without [CLS]/question/[SEP]) and ``val/skim/kept_ratio_plot`` (its line plot);
* ``val/visualization``: :mod:`skim.visualize`'s page for a few fixed examples of the evaluation split
  (``wandb.Html``: which tokens each layer kept, the gold and predicted answer or label).

Everything goes through the run of Lightning's ``WandbLogger``. In a fast dev run (``debug=fdr``) Lightning swaps the
loggers for a dummy; the media then go to the W&B run that ``skim.train`` opened for the config, so a fast dev run
shows what a full run would log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)

#: validation scores whose summary is the best value ("max")
BEST_METRICS = ("val/f1", "val/em", "val/acc", "val/mcc", "val/pearson", "val/spearman", "val/HasAns_f1")
#: summary = the last value (what the final model does)
LAST_METRICS = ("val/flops/speedup", "val/flops/speedup_vs_padded", "val/skim/kept_mean", "val/num_scored")
STEP = "trainer/global_step"
#: the keys of what this callback logs (skim.dashboard's panels read them)
KEPT_TABLE_KEY = "val/skim/kept_ratio_table"
KEPT_PLOT_KEY = "val/skim/kept_ratio_plot"
VISUALIZATION_KEY = "val/visualization"


class WandbMediaCallback(pl.Callback):
    """``examples``: how many of the evaluation split's first examples to visualise (an int), or which ones (a list of
    indices / QA ids); 0 or [] turns the visualisation off. ``kept_table``: log the per-layer kept-ratio table."""

    def __init__(self, examples: int | Sequence[int | str] = 3, kept_table: bool = True):
        self.examples = examples
        self.kept_table = kept_table
        self._records: list[tuple[int, dict[str, Any]]] | None = None
        self._defined_for: str | None = None

    # ---- the run -----------------------------------------------------------------------------------------
    @staticmethod
    def run_of(trainer) -> Any | None:
        """The W&B run of the trainer's ``WandbLogger``; in a fast dev run, the active run (if any)."""
        from lightning.pytorch.loggers import WandbLogger

        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                return lg.experiment
        if trainer.fast_dev_run:
            import wandb

            return wandb.run
        return None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        run = self.run_of(trainer)
        if run is None or self._defined_for == run.id:
            return
        monitor = getattr(trainer.datamodule, "monitor", None) if trainer.datamodule is not None else None
        best = [*BEST_METRICS, *([monitor] if monitor and monitor not in BEST_METRICS and monitor != "val/loss" else [])]
        # Lightning's WandbLogger has already made trainer/global_step the step of every metric ("*")
        for name in best:
            run.define_metric(name, step_metric=STEP, summary="max")
        run.define_metric("val/loss", step_metric=STEP, summary="min")
        for name in LAST_METRICS:
            run.define_metric(name, step_metric=STEP, summary="last")
        self._defined_for = run.id

    # ---- after each validation ---------------------------------------------------------------------------
    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        run = self.run_of(trainer)
        if run is None:
            return
        import wandb

        payload: dict[str, Any] = {}
        if self.kept_table:
            table = kept_ratio_table(trainer.callback_metrics)
            if table is not None:
                payload[KEPT_TABLE_KEY] = table
                payload[KEPT_PLOT_KEY] = wandb.plot.line(
                    table, "layer", "kept_ratio", title="kept-token ratio entering each layer (padding excluded)"
                )
        page = self.visualization(trainer, pl_module)
        if page is not None:
            payload[VISUALIZATION_KEY] = wandb.Html(page)
        if payload:
            run.log({**payload, STEP: trainer.global_step})

    def visualization(self, trainer, pl_module) -> str | None:
        """:mod:`skim.visualize`'s HTML for the fixed examples, computed without touching the training RNG."""
        from skim.visualize import collect_views, eval_split, load_records, render_html

        if not self.examples or trainer.datamodule is None:
            return None
        if self._records is None:
            raw = eval_split(trainer.datamodule)
            wanted = list(range(min(int(self.examples), len(raw)))) if isinstance(self.examples, int) else list(self.examples)
            self._records = load_records(trainer.datamodule, wanted, raw=raw)
        with torch.random.fork_rng(devices=[]):
            views = collect_views(pl_module, trainer.datamodule, self._records)
        return render_html(views, title=f"skim={pl_module.strategy.name} · step {trainer.global_step}")


def kept_ratio_table(metrics: dict[str, Any]):
    """A ``wandb.Table`` (layer, kept_ratio, kept_context_ratio) from the ``val/skim/kept_*layer{i}`` metrics."""
    import wandb

    def layer_values(prefix: str) -> dict[int, float]:
        return {int(k[len(prefix):]): float(v) for k, v in metrics.items() if k.startswith(prefix) and k[len(prefix):].isdigit()}

    kept, ctx = layer_values("val/skim/kept_layer"), layer_values("val/skim/kept_context_layer")
    if not kept:
        return None
    return wandb.Table(columns=["layer", "kept_ratio", "kept_context_ratio"],
                       data=[[i, kept[i], ctx.get(i)] for i in sorted(kept)])
