"""``skim=keep_every_other``: after layer ``skim.after``, every second token that is not protected leaves."""

from dataclasses import dataclass

import torch

from skim.errors import ConfigError
from skim.state import AttachedEncoder, SkimState
from skim.strategies.base import SkimStrategy, StrategyConfig, register


@dataclass
class KeepEveryOtherConfig(StrategyConfig):  # the schema of conf/skim/keep_every_other.yaml
    name: str = "keep_every_other"
    after: int = 1  # the layer (0-based) after which every second unprotected token leaves


@register  # skim=keep_every_other now names this class
class KeepEveryOther(SkimStrategy):
    name = "keep_every_other"
    config_class = KeepEveryOtherConfig

    def attach(self, encoder: AttachedEncoder) -> None:  # once, when the encoder is built
        super().attach(encoder)
        if not 0 <= self.cfg.after < encoder.num_layers:
            raise ConfigError(f"skim.after={self.cfg.after}: the model has layers 0..{encoder.num_layers - 1}")

    def after_layer(self, state: SkimState, attn_probs: torch.Tensor | None) -> torch.Tensor | None:
        if state.layer != self.cfg.after:
            return None  # no decision: every live token goes on
        protected = state.gather_full(state.protect_full)  # [CLS]; for QA also the question and [SEP]
        rank = (state.alive & ~protected).cumsum(1)  # 1, 2, 3, ... over the other live tokens, in order
        return protected | (rank % 2 == 1)  # [B, n] keep mask; the encoder intersects it with the live tokens
