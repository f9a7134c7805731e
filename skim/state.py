"""What passes between the skim encoder and a skim strategy: the state a strategy reads and changes between layers
(:class:`SkimState`), the encoder's output that its losses and statistics read (:class:`EncoderOutput`), and what
``attach`` may read of the encoder (:class:`AttachedEncoder`).

Its own module so that neither side imports the other: the encoder (``skim/encoders/skim_encoder.py``) runs any
strategy through the hooks of ``skim/strategies/base.py``, and a strategy knows the encoder only through these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


class AttachedEncoder(Protocol):
    """What :meth:`SkimStrategy.attach <skim.strategies.base.SkimStrategy.attach>` may read of the encoder
    (:class:`skim.encoders.skim_encoder.SkimEncoder`) to build predictors for its shapes."""

    backbone: nn.Module  # the HF encoder (``backbone.config``: heads, widths)
    num_layers: int  # layer applications the strategy sees (ALBERT: one per application of a shared layer)

    @property
    def hidden_size(self) -> int: ...


@dataclass
class SkimState:
    """Everything a strategy may look at or change between layers."""

    mode: str
    hidden: torch.Tensor  # [B, n, D] current sequence (n == L in mask mode)
    pos: torch.Tensor  # [B, n] long: original position of each current token
    alive: torch.Tensor  # [B, n] bool: real (non-padding) and not skimmed
    forwarded: torch.Tensor  # [B, L, D] last output of every token (full length)
    real_full: torch.Tensor  # [B, L] bool: non-padding tokens, original coordinates
    protect_full: torch.Tensor  # [B, L] bool: tokens a strategy may choose to never skim (CLS/question/SEP)
    layer: int = 0
    # optional float keep weights [B, n] carrying gradients (mask mode only); None = use ``alive``
    keep_weight: torch.Tensor | None = None
    # kept real tokens entering each layer, per example: list of [B] long tensors
    kept_per_layer: list[torch.Tensor] = field(default_factory=list)
    # of which protected ("special": [CLS]/question/[SEP]) tokens
    special_per_layer: list[torch.Tensor] = field(default_factory=list)
    # free slot for strategies (predictor logits, decisions, ...)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def alive_full(self) -> torch.Tensor:
        """[B, L] bool: alive tokens in original coordinates."""
        full = torch.zeros_like(self.real_full)
        return full.scatter(1, self.pos, self.alive) & self.real_full if self.mode == "prune" else self.alive.clone()

    def gather_full(self, full: torch.Tensor) -> torch.Tensor:
        """Take a full-length per-token tensor [B, L, ...] to the current sequence's coordinates."""
        if self.mode == "mask":
            return full
        idx = self.pos
        if full.dim() > 2:
            idx = idx.view(*idx.shape, *([1] * (full.dim() - 2))).expand(*idx.shape, *full.shape[2:])
        return full.gather(1, idx)


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # [B, L, D] full length; skimmed tokens carry their forwarded state
    final_keep: torch.Tensor  # [B, L] bool: tokens alive after the last layer (and its decision)
    kept_per_layer: torch.Tensor  # [num_layers, B] real tokens entering each layer
    # [num_layers, B] live tokens before each layer's before-layer decision (what a Transkimmer predictor reads)
    tokens_before_decision: torch.Tensor
    real_tokens: torch.Tensor  # [B] real tokens per example
    special_per_layer: torch.Tensor  # [num_layers, B] live protected tokens entering each layer
    special_tokens: torch.Tensor  # [B] protected tokens per example
    extras: dict[str, Any]
    # [B, L] float keep weights with straight-through gradients after the last layer (mask-mode training of a
    # strategy that sets ``SkimState.keep_weight``), else None: ``final_keep`` as a differentiable quantity
    final_keep_weight: torch.Tensor | None = None
    # [num_layers, B, L] bool, original coordinates: the tokens entering each layer (only with ``record_alive``)
    alive_per_layer: torch.Tensor | None = None
