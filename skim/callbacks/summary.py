"""Lightning's model summary without its ``Total FLOPs`` line.

Lightning counts FLOPs only through ``example_input_array``, which skim modules do not set (their input is a batch
dict whose shape varies), so every run printed ``Total FLOPs: 0`` next to skim's own analytic FLOPs
(``val/flops/*``, checked against ``FlopCounterMode``). The line is dropped rather than computed on a made-up input.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary as _LightningModelSummary

log = logging.getLogger("lightning.pytorch.callbacks.model_summary")


class ModelSummary(_LightningModelSummary):
    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops: int = 0, **kwargs: Any) -> None:
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

        # without FLOPs counted, Lightning's table would show a FLOPs column of zeros and a "Total Flops" footer
        data = [col for col in summary_data if col[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes, 0, *data)
        log.info("\n" + "\n".join(ln for ln in table.splitlines() if "Total Flops" not in ln))
