"""Typed schemas for the ``skim`` config group (fairseq-style: the dataclass is the schema, YAML only sets values).

``conf/skim/<name>.yaml`` pulls the schema ``/skim_schema_<name>`` into its defaults, so a wrong key or type in a YAML
file or on the command line (``skim.threshold=abc``) fails at composition with a message naming the field.

The schemas are stored as top-level configs rather than as a config group: ``--help`` lists every config group as a
choice for users, and a schema is not one (``skim_schema=blockskim`` would compose nonsense).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

SCHEMA_PREFIX = "skim_schema_"


def register_configs() -> None:
    from skim.strategies import registered

    cs = ConfigStore.instance()
    for name, cls in registered().items():
        cs.store(name=f"{SCHEMA_PREFIX}{name}", node=cls.config_class)
