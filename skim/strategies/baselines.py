"""``skim=truncate`` and ``skim=random``: fixed keep schedules without a predictor.

Before layer i every example keeps ``ceil(schedule[i] * real_length)`` of its live tokens (cumulative), so
``schedule=[1, 1, 0.333, ...]`` keeps a third of the tokens after layer 1. Schedules shorter than the model repeat
their last value; ``keep_after``/``keep_ratio`` is the common one-step shorthand, and ``match_run=<run dir>`` takes
the schedule from another run's measured per-layer kept ratios (``val/skim/kept_layer{i}`` in its metrics.json), so
a baseline runs at that run's budget.

``truncate`` keeps the first tokens (truncation: for QA the question and the leading context); like the oracle in
``../shared/docs/gpu.md`` it measures what removal costs and gains. ``random`` keeps protected tokens ([CLS], and the
question for QA) and a seeded uniformly random choice of the others: the baseline a learnt skimmer has to beat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from skim.errors import ConfigError
from skim.state import SkimState
from skim.strategies.base import SkimStrategy, StrategyConfig, register


@dataclass
class TruncateConfig(StrategyConfig):
    name: str = "truncate"
    #: per-layer keep ratio of the real tokens entering each layer (None: use keep_after/keep_ratio)
    schedule: list[float] | None = None
    #: shorthand: keep ``keep_ratio`` of the tokens from layer ``keep_after + 1`` on
    keep_after: int = 1
    keep_ratio: float = 1.0
    #: a run directory: use its measured per-layer kept ratios as the schedule (overrides the two options above)
    match_run: str | None = None


@register
class TruncateSkim(SkimStrategy):
    name = "truncate"
    config_class = TruncateConfig

    def __init__(self, cfg: TruncateConfig):
        super().__init__(cfg)
        # the config keeps what the user gave (a run directory); the schedule it stands for is derived here
        self.schedule = matched_schedule(cfg.match_run) if cfg.match_run else cfg.schedule
        ratios = self.schedule
        if ratios is not None and any(not 0.0 <= r <= 1.0 for r in ratios):
            raise ConfigError(f"skim.schedule ratios must lie in [0, 1], got {ratios}")
        if not 0.0 <= cfg.keep_ratio <= 1.0:
            raise ConfigError(f"skim.keep_ratio must lie in [0, 1], got {cfg.keep_ratio}")

    def ratio(self, layer: int) -> float:
        if self.schedule:
            return self.schedule[min(layer, len(self.schedule) - 1)]
        return self.cfg.keep_ratio if layer > self.cfg.keep_after else 1.0

    def before_layer(self, state: SkimState) -> torch.Tensor | None:
        r = self.ratio(state.layer)
        if r >= 1.0:
            return None
        budget = (state.real_full.sum(1).double() * r).ceil().clamp_min(1)
        return self.choose(state, budget.to(torch.long))

    def choose(self, state: SkimState, budget: torch.Tensor) -> torch.Tensor:
        """[B, n] keep mask with ``budget`` [B] live tokens per example: the first ones."""
        rank = state.alive.long().cumsum(1)  # 1-based rank of each live token in its sequence
        return rank <= budget[:, None]


def matched_schedule(run: str | Path) -> list[float]:
    """The per-layer kept ratios another run measured (``val/skim/kept_layer{i}`` in ``<run>/metrics.json``)."""
    path = Path(run) / "metrics.json"
    if not path.is_file():
        raise ConfigError(f"skim.match_run {run}: no metrics.json there (a finished train or eval run directory)")
    metrics = json.loads(path.read_text()).get("metrics", {})
    kept = {int(k.rsplit("layer", 1)[1]): float(v) for k, v in metrics.items() if k.startswith("val/skim/kept_layer")}
    if not kept or sorted(kept) != list(range(len(kept))):
        raise ConfigError(f"skim.match_run {run}: metrics.json has no per-layer kept ratios (val/skim/kept_layer*)")
    return [kept[i] for i in range(len(kept))]


@dataclass
class RandomConfig(TruncateConfig):
    name: str = "random"
    #: seed of the token choice (one generator per run, so an evaluation is reproducible)
    seed: int = 0


@register
class RandomSkim(TruncateSkim):
    name = "random"
    config_class = RandomConfig

    def __init__(self, cfg: RandomConfig):
        super().__init__(cfg)
        self._generators: dict[torch.device, torch.Generator] = {}

    def choose(self, state: SkimState, budget: torch.Tensor) -> torch.Tensor:
        """Protected tokens first, then a uniformly random choice of the other live ones, ``budget`` in all."""
        device = state.alive.device
        if device not in self._generators:
            self._generators[device] = torch.Generator(device).manual_seed(self.cfg.seed)
        protected = state.alive & state.gather_full(state.protect_full)
        # drawn in original coordinates, so mask and prune mode (packed sequences) make the same choice
        score = state.gather_full(torch.rand(state.real_full.shape, generator=self._generators[device], device=device))
        score = score.masked_fill(protected, 2.0).masked_fill(~state.alive, -1.0)
        rank = score.argsort(1, descending=True).argsort(1)  # 0-based
        return (rank < budget[:, None]) | protected
