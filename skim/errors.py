"""User-facing error types.

The CLI catches :class:`SkimError` and prints ``str(err)`` as one line (no
traceback) before exiting non-zero, so messages must be self-contained: they
name the file / option and the offending field, row or value.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "RunInterrupted", "SkimError", "one_line"]


class SkimError(Exception):
    """Base class: user-facing errors that the CLI prints as one clear line (no traceback) and exits non-zero."""

    exit_code = 2


class DataError(SkimError):
    """Bad or missing dataset file, or malformed content.

    The message names the file and the field / row / id at fault.
    """


class ConfigError(SkimError):
    """Incompatible or invalid configuration combination; the message names the option."""


class RunInterrupted(SkimError):
    """The run was stopped by a signal (SIGTERM from a scheduler or ``kill``); the message says how to resume.

    Exits 128 + 15 as a process killed by SIGTERM would, so that schedulers and shell loops record a failure."""

    exit_code = 128 + 15


def one_line(text: object, limit: int = 300) -> str:
    """An arbitrary (library) error text as one bounded line for the CLI."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."
