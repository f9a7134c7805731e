"""Skim strategies; importing this package registers every built-in strategy."""

from skim.strategies import blockskim, forced, none, transkimmer  # noqa: F401
from skim.strategies.base import SkimStrategy, StrategyConfig, build_strategy, register, strategy_class

__all__ = ["SkimStrategy", "StrategyConfig", "build_strategy", "register", "strategy_class"]
