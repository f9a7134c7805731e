"""Skim strategies; importing this package registers every strategy module in this folder, so a new strategy is one
module (a config dataclass plus a ``@register``-ed :class:`SkimStrategy`) and one YAML in ``conf/skim/``."""

import importlib
import pkgutil

from skim.strategies.base import SkimStrategy, StrategyConfig, build_strategy, register, strategy_class

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SkimStrategy", "StrategyConfig", "build_strategy", "register", "strategy_class"]
