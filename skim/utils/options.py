"""Config options checked against the annotations of what they configure, before anything heavy runs.

Hydra hands command-line values over as parsed (``data.batch_size=abc`` is the string ``'abc'``), and neither skim's
DataModules nor Lightning's ``Trainer`` check their arguments' types, so a wrong type would fail far from the option:
in a data loader, a format string, or Lightning's loop after the data has been tokenised.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from skim.errors import ConfigError

_TYPE_NAMES = {int: "an integer", bool: "true or false", str: "a string", dict: "a mapping", list: "a list",
               float: "a number", type(None): "null"}  # fmt: skip


def is_instance(value: Any, t: Any) -> bool:
    """``isinstance`` for an annotation: generics by their origin (``list[int]``: a list), ``Literal`` by its values;
    bool is an int subclass, but ``data.batch_size=true`` is not a size; an int is a fine float."""
    origin = typing.get_origin(t) or t
    if origin is typing.Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(t))
    if not isinstance(origin, type):  # an annotation the check cannot test (a TypeVar): not checked
        return True
    return (isinstance(value, origin) or (origin is float and isinstance(value, int))) and not (
        origin in (int, float) and isinstance(value, bool)
    )


def _describe(allowed: tuple[Any, ...]) -> str:
    """``one of 'a', 'b' or an integer or null`` for the alternatives of a union (its literals listed together)."""
    literals = [v for t in allowed if typing.get_origin(t) is typing.Literal for v in typing.get_args(t)]
    kinds = [typing.get_origin(t) or t for t in allowed if typing.get_origin(t) is not typing.Literal]
    names = [_TYPE_NAMES.get(k, f"a {getattr(k, '__name__', k)}") for k in kinds]
    return " or ".join(dict.fromkeys(([f"one of {', '.join(map(repr, literals))}"] if literals else []) + names))


def check_types(options: Mapping[str, Any], target: type | Callable, prefix: str, minimum: Mapping[str, float] | None = None) -> None:
    """Check each of ``options`` that ``target`` (a class's constructor or a function) annotates against its
    annotation, and against ``minimum``; the first mismatch is a :class:`ConfigError` naming ``<prefix>.<option>``."""
    hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    for name, hint in hints.items():
        if name not in options or hint is Any or name == "return":
            continue
        value = options[name]
        allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if not any(is_instance(value, t) for t in allowed):
            raise ConfigError(f"{prefix}.{name} must be {_describe(allowed)}, got {value!r} ({type(value).__name__})")
        if minimum and name in minimum and value is not None and value < minimum[name]:
            raise ConfigError(f"{prefix}.{name} must be at least {minimum[name]}, got {value}")


def check_trainer_options(options: Mapping[str, Any]) -> None:
    """``trainer.*`` against ``lightning.pytorch.Trainer``'s own signature: an unknown option or a wrong type
    (``trainer.max_epochs=abc``) is one line before any data is read, where Lightning would fail inside its fit loop.
    Nested ``_target_`` configs (instantiated objects) are left to Hydra."""
    from lightning.pytorch import Trainer

    known = typing.get_type_hints(Trainer.__init__)
    plain = {k: v for k, v in options.items() if not k.startswith("_") and not (isinstance(v, Mapping) and "_target_" in v)}
    unknown = [k for k in plain if k not in known]
    if unknown:
        raise ConfigError(f"unknown trainer option(s) {', '.join(map(repr, unknown))} (not an argument of lightning's Trainer)")
    check_types(plain, Trainer, "trainer")


def checked(options: Mapping[str, Any], schema: type, prefix: str) -> dict[str, Any]:
    """``options`` over the defaults of the dataclass ``schema``; an unknown key, a wrong type or a value below the
    schema's ``MINIMUM`` (if it has one) is a :class:`ConfigError` naming ``<prefix>.<option>``."""
    fields = [f.name for f in dataclasses.fields(schema)]
    unknown = [k for k in options if k not in fields]
    if unknown:
        raise ConfigError(f"unknown {prefix} option(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(fields))})")
    check_types(options, schema, prefix, getattr(schema, "MINIMUM", None))
    return {**dataclasses.asdict(schema()), **options}
