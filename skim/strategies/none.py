"""``skim=none``: the dense baseline, run through the same layer-by-layer encoder."""

from skim.strategies.base import SkimStrategy, StrategyConfig, register


@register
class NoSkim(SkimStrategy):
    name = "none"
    config_class = StrategyConfig
