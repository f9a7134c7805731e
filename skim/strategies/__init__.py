"""Skim strategies; importing this package registers every strategy module in this folder, so a new strategy is one
module (a config dataclass plus a ``@register``-ed :class:`SkimStrategy`) and one YAML in ``conf/skim/`` (README,
"Add a strategy"). The lookups below live here, after the imports, so that they always see every built-in strategy.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields
from typing import Any

from omegaconf import OmegaConf

from skim.errors import ConfigError
from skim.strategies.base import _REGISTRY, SkimStrategy, StrategyConfig, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def registered() -> dict[str, type[SkimStrategy]]:
    """Every registered strategy by name: the built-in ones and any registered since (``@register``)."""
    return dict(_REGISTRY)


def strategy_class(name: str) -> type[SkimStrategy]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown skim strategy {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_strategy(cfg: Any) -> SkimStrategy:
    """Build a strategy from a mapping (Hydra node, checkpoint hparams or plain dict), validated by its dataclass."""
    if cfg is None:
        cfg = {"name": "none"}
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    cls = strategy_class(cfg.get("name", "none"))
    known = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(cfg) - known - {"_target_"})
    if unknown:
        raise ConfigError(f"unknown option(s) for skim={cls.name}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.config_class), {k: cfg[k] for k in known & set(cfg)}))
    except Exception as err:  # omegaconf validation errors
        raise ConfigError(f"invalid option for skim={cls.name}: {err}".splitlines()[0]) from err
    for key in ("train_mode", "eval_mode"):
        if getattr(typed, key) not in ("mask", "prune"):
            raise ConfigError(f"skim.{key} must be 'mask' or 'prune', got {getattr(typed, key)!r}")
    return cls(typed)


__all__ = ["SkimStrategy", "StrategyConfig", "build_strategy", "register", "registered", "strategy_class"]
