"""``skim=forced``: a fixed keep schedule, for benchmarking shapes without a trained predictor.

Before layer i every example keeps the first ``ceil(schedule[i] * real_length)`` of its live tokens (cumulative),
so ``schedule=[1, 1, 0.333, ...]`` keeps a third of the tokens after layer 1. Schedules shorter than the model
repeat their last value; ``keep_after``/``keep_ratio`` is the common one-step shorthand. Like the oracle in
``../shared/docs/gpu.md`` it measures what removal costs and gains, not what a predictor would choose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from skim.encoders.skim_encoder import SkimState
from skim.errors import ConfigError
from skim.strategies.base import SkimStrategy, StrategyConfig, register


@dataclass
class ForcedConfig(StrategyConfig):
    name: str = "forced"
    #: per-layer keep ratio of the real tokens entering each layer (None: use keep_after/keep_ratio)
    schedule: list[float] | None = None
    #: shorthand: keep ``keep_ratio`` of the tokens from layer ``keep_after + 1`` on
    keep_after: int = 1
    keep_ratio: float = 1.0


@register
class ForcedSkim(SkimStrategy):
    name = "forced"
    config_class = ForcedConfig

    def __init__(self, cfg: ForcedConfig):
        super().__init__(cfg)
        ratios = cfg.schedule
        if ratios is not None and any(not 0.0 <= r <= 1.0 for r in ratios):
            raise ConfigError(f"skim.schedule ratios must lie in [0, 1], got {ratios}")
        if not 0.0 <= cfg.keep_ratio <= 1.0:
            raise ConfigError(f"skim.keep_ratio must lie in [0, 1], got {cfg.keep_ratio}")

    def ratio(self, layer: int) -> float:
        if self.cfg.schedule:
            return self.cfg.schedule[min(layer, len(self.cfg.schedule) - 1)]
        return self.cfg.keep_ratio if layer > self.cfg.keep_after else 1.0

    def before_layer(self, state: SkimState) -> torch.Tensor | None:
        r = self.ratio(state.layer)
        if r >= 1.0:
            return None
        real = state.real_full.sum(1)
        budget = torch.tensor([max(1, math.ceil(r * int(n))) for n in real.tolist()], device=real.device)
        rank = state.alive.long().cumsum(1)  # 1-based rank of each live token in its sequence
        return rank <= budget[:, None]
