"""Typed schemas for the ``skim`` config group (fairseq-style: the dataclass is the schema, YAML only sets values).

``conf/skim/<name>.yaml`` pulls ``/skim_schema/<name>`` into its defaults, so a wrong key or type in a YAML file or
on the command line (``skim.threshold=abc``) fails at composition with a message naming the field.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore


def register_configs() -> None:
    from skim.strategies.base import _REGISTRY, strategy_class

    strategy_class("none")  # imports the built-in strategies
    cs = ConfigStore.instance()
    for name, cls in _REGISTRY.items():
        cs.store(group="skim_schema", name=name, node=cls.config_class)
