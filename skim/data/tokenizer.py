"""The fast tokenizer of ``model.tokenizer`` (a Hub id or a local folder): data featurisation is its only user."""

from __future__ import annotations

from skim.errors import ConfigError


def build_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"could not load tokenizer {name_or_path!r} ({first}). Offline? Point model.tokenizer at a local folder"
        ) from err
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"tokenizer {name_or_path!r} is not a fast tokenizer; extractive QA needs offset mappings")
    return tok
