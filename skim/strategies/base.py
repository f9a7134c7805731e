"""The skim-strategy interface.

A strategy is one module under ``skim/strategies/`` (a typed config dataclass plus a :class:`SkimStrategy`
subclass, registered with :func:`register`) and one YAML in ``conf/skim/``. The task LightningModules only talk to
this interface, so they never know which strategy runs. ``skim=none`` is the dense baseline through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from skim.errors import ConfigError
from skim.state import AttachedEncoder, EncoderOutput, SkimState


@dataclass
class StrategyConfig:
    """Fields shared by every strategy (each strategy's dataclass extends this)."""

    name: str = "none"
    #: how keep decisions act while training: ``mask`` (full length) or ``prune``
    train_mode: str = "mask"
    #: how keep decisions act at validation/inference: ``prune`` removes tokens physically
    eval_mode: str = "prune"


class SkimStrategy(nn.Module):
    """Base class: the dense behaviour (never skims)."""

    name: ClassVar[str] = "none"
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    #: tasks the strategy can train on ("qa", "cls")
    supported_tasks: ClassVar[tuple[str, ...]] = ("qa", "cls")
    #: whether the strategy reads attention probabilities (forces eager attention)
    requires_attention_probs: ClassVar[bool] = False
    #: QA logit written at positions that did not survive to the output (None: use their forwarded state)
    skimmed_logit: float | None = None
    #: mask-mode training with straight-through keep weights: whether those weights also reach the forwarded state of
    #: a skimmed token (its stale hidden state); pointless, and harmful to the predictor, when no head reads that state
    forwarded_state_gradient: bool = True
    #: the share of the fit's optimiser steps already taken (0 at the first step), set by the task module before every
    #: training step from ``trainer.global_step``, so a resumed run continues its schedules exactly; 1 outside a fit
    training_progress: float = 1.0
    #: QA training with ``skimmed_logit``: whether a feature whose gold answer was skimmed still trains the backbone
    #: and span head with its span loss (it then only lowers the logits of the kept positions)
    skimmed_answer_trains_backbone: bool = True
    #: attention implementation the strategy brings (a registered HF attention function), if any
    attn_implementation: ClassVar[str | None] = None

    def __init__(self, cfg: StrategyConfig):
        super().__init__()
        self.cfg = cfg
        self.num_layers = 0

    # ---- construction ------------------------------------------------------------------------------------
    def attach(self, encoder: AttachedEncoder) -> None:
        """Called once by the encoder: build predictors for its shapes."""
        self.num_layers = encoder.num_layers

    def resolve_layers(self, layers: list[int] | None, num_layers: int) -> list[int]:
        """``skim.skim_layers`` -> sorted layer indices (None = every layer), checked against the model depth."""
        chosen = list(range(num_layers)) if layers is None else sorted(set(layers))
        bad = [i for i in chosen if not 0 <= i < num_layers]
        if bad:
            raise ConfigError(f"skim.skim_layers {bad} out of range for a {num_layers}-layer model (valid: 0..{num_layers - 1})")
        return chosen

    @classmethod
    def check_compatible(cls, task: str, attn_implementation: str) -> None:
        if task not in cls.supported_tasks:
            raise ConfigError(
                f"skim={cls.name} does not support {task!r} tasks (it supports: {', '.join(cls.supported_tasks)})"
            )
        if cls.requires_attention_probs and attn_implementation not in ("eager", "auto"):
            raise ConfigError(
                f"skim={cls.name} reads attention probabilities, which fused attention "
                f"(model.attn_implementation={attn_implementation}) does not return; "
                "use model.attn_implementation=eager (or auto)"
            )

    # ---- hooks called by the encoder ---------------------------------------------------------------------
    def needs_attention_probs(self, layer: int) -> bool:
        return False

    def before_layer(self, state: SkimState) -> torch.Tensor | None:
        """Return a [B, n] bool keep mask for the tokens entering ``state.layer`` (or None)."""
        return None

    def after_layer(self, state: SkimState, attn_probs: torch.Tensor | None) -> torch.Tensor | None:
        """Return a [B, n] bool keep mask for the tokens leaving ``state.layer`` (or None)."""
        return None

    def layer_kwargs(self, state: SkimState) -> dict[str, Any]:
        """Extra keyword arguments for the backbone layer call (custom attention functions)."""
        return {}

    # ---- training ----------------------------------------------------------------------------------------
    def aux_losses(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms, already weighted, that are added to the task loss."""
        return {}

    def train_diagnostics(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-step scalars logged as ``train/skim/<name>`` while training (no gradients): is the predictor learning?"""
        return {}

    # ---- cost accounting -----------------------------------------------------------------------------------
    #: which live tokens a layer's predictor reads: "before" its layer's decision (Transkimmer) or the tokens that
    #: ran the layer (Block-Skim, "layer")
    predictor_reads: ClassVar[str] = "layer"

    def predictor_macs(self, layer: int, tokens: torch.Tensor, hidden: int) -> torch.Tensor | int:
        """Multiply-accumulates of this strategy's predictor at ``layer`` for ``tokens`` live tokens (a tensor of
        per-example counts: compute element-wise)."""
        return 0

    def predictor_tokens(self, out: EncoderOutput) -> torch.Tensor:
        """[num_layers, B] tokens each layer's predictor reads (a strategy whose cost depends on more per-example counts
        returns [num_layers, B, k]; :meth:`predictor_macs` then gets [B, k])."""
        return out.tokens_before_decision if self.predictor_reads == "before" else out.kept_per_layer

    # ---- evaluation statistics (summed over batches and ranks) -------------------------------------------
    def eval_stat_size(self) -> int:
        return 0

    def eval_stats(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return None

    def format_eval_stats(self, totals: torch.Tensor) -> dict[str, float]:
        return {}

    def eval_report(self, totals: torch.Tensor) -> dict[str, Any]:
        """A JSON-able detail of the summed statistics, written to ``<run>/skim_stats.json`` (e.g. histograms)."""
        return {}


def attention_received(probs: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """[B, H, n, n] attention probabilities (query, key) -> [B, n] float32 attention each key receives, summed over
    heads and over the live queries (``alive`` [B, n]): PoWER-BERT's significance, LTP's importance before its mean."""
    return probs.sum(1, dtype=torch.float32).masked_fill(~alive[:, :, None], 0.0).sum(1)


_REGISTRY: dict[str, type[SkimStrategy]] = {}


def register(cls: type[SkimStrategy]) -> type[SkimStrategy]:
    """Class decorator: make the strategy available as ``skim.name=<cls.name>`` (looked up by
    :func:`skim.strategies.strategy_class`)."""
    _REGISTRY[cls.name] = cls
    return cls
