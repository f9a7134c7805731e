"""A vector of counts summed over batches and DDP ranks (kept tokens per layer, block TP/FP/FN, ...)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class SumVector(Metric):
    full_state_update = False

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.add_state("total", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor) -> None:
        self.total += value.detach().to(self.total.device, torch.float64).reshape(self.size)

    def compute(self) -> torch.Tensor:
        return self.total
