"""User-facing error types.

The CLI catches :class:`SkimError` and prints ``str(err)`` as one line (no
traceback) before exiting non-zero, so messages must be self-contained: they
name the file / option and the offending field, row or value.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "SkimError"]


class SkimError(Exception):
    """Base class: user-facing errors that the CLI prints as one clear line (no traceback) and exits non-zero."""


class DataError(SkimError):
    """Bad or missing dataset file, or malformed content.

    The message names the file and the field / row / id at fault.
    """


class ConfigError(SkimError):
    """Incompatible or invalid configuration combination; the message names the option."""
