"""Transkimmer (Guan et al., ACL 2022): an MLP before every layer decides, per token, to keep or skim it.

Training: hard Gumbel-softmax with straight-through gradients, a cumulative mask (a skimmed token never returns),
[CLS] always kept, loss = task loss + ``skim_coefficient`` x mean kept fraction; skimmed tokens' last hidden state is
forwarded to the output. See ``../shared/docs/algorithms.md`` §2. The original code's quirks are flags:

* ``mask_mode`` – ``multiply``: the paper's code multiplies attention probabilities by the mask after the softmax
  (no renormalisation; what the published numbers used); ``additive`` (default): masked keys are removed before the
  softmax (the authors' later fix), which is exactly what prune mode computes.
* ``eval_decision`` – ``gumbel``: the original samples at evaluation too (stochastic); ``expected`` (default, not in
  the original): per example, keep [CLS] and the round(sum of P(keep)) other live tokens with the highest P(keep), the
  count the training-time sampling keeps on average, deterministically; ``argmax``: keep a token iff P(keep) > 0.5.
  Argmax keeps fewer where a layer's P(keep) is spread below 0.5: on IMDB it lost 25 points where ``expected`` and
  ``gumbel`` did not; on SST-2 the three were within 0.6 points (README, "Transkimmer on IMDB" and "... on SST-2").
* ``loss_denominator`` – ``padded``: the original divides kept counts (padding included) by the padded length;
  ``real`` (default): kept real tokens over real tokens, per example.
* ``qa_skimmed`` (extractive QA only) – ``forward``: as the original, a skimmed token keeps its stale hidden state
  and the span head scores it like any other; ``exclude`` (default): a skimmed token cannot be the answer (Block-Skim's
  rule), the span softmax runs over kept tokens (differentiable in the keep weights), and the keep weights carry no
  gradient into stale states that no head reads. On real SQuAD ``forward`` never starts to skim: at the dense
  checkpoint the straight-through gradient through the stale states pushes the mean token towards "keep" harder than
  the skim loss pushes it away (README, "Why Transkimmer did not skim on SQuAD").
* ``skimmed_answer_loss`` (QA with ``exclude``, not in the original) – ``backbone`` (default): a feature whose sampled
  mask skimmed its gold answer's first or last token still trains the backbone and span head with its span loss, which
  then only lowers the logits of whatever was kept; ``predictors``: that loss reaches only the keep weights, pulling
  the answer's towards keep (and, through the predictors, the layers they read), never the span logits.
* ``keep_weight_chain`` – ``product`` (default, the original): a token's keep weight is the product of every layer's
  straight-through decision, also the decisions sampled after it was skimmed, which change nothing in the forward
  pass but multiply the gradient to the predictor that skimmed it: when a later one samples "skim" too, that gradient
  is exactly zero. ``until_skipped`` (not in the original): the product stops at the layer that skimmed the token, so
  the losses always reach that predictor; the forward pass is the same. On SQuAD the product is what kept collapsed
  runs (nothing but [CLS] kept) from ever coming back; ``until_skipped`` ended them at ~30 F1 instead of ~2 but did
  not stop the slide, and cost 3 F1 in a run that ``product`` kept stable (README, "Transkimmer's collapse on SQuAD").
* ``coefficient_warmup`` (not in the original: 0) – the skim loss's weight rises linearly from 0 to
  ``skim_coefficient`` over that share of the fit's optimiser steps. On SQuAD, 0.3 without a layer-0 predictor
  collapsed without it and held at three seeds with 0.5; 0.6 held at one seed of three (README, same section).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from skim.errors import ConfigError
from skim.state import AttachedEncoder, EncoderOutput, SkimState
from skim.strategies.base import SkimStrategy, StrategyConfig, register

ATTN_NAME = "skim_transkimmer"


@dataclass
class TranskimmerConfig(StrategyConfig):
    name: str = "transkimmer"
    #: weight of the skim loss (paper scripts: 0.5 GLUE/IMDB, 0.3 SQuAD v2, 0.2 20News/Yelp)
    skim_coefficient: float = 0.5
    tau: float = 1.0
    #: hidden size of the predictor MLP (None = the model's hidden size, as the original)
    predictor_hidden: int | None = None
    #: keep/skip bias of the last predictor layer starts at +/- bias_init (P(keep) ~ 1 at the start)
    bias_init: float = 5.0
    mask_mode: str = "additive"
    #: argmax (P(keep) > 0.5), gumbel (the original: sampled), expected (the round(sum P(keep)) most likely tokens)
    eval_decision: str = "expected"
    loss_denominator: str = "real"
    #: layers with a predictor (None = every layer)
    skim_layers: list[int] | None = None
    #: extractive QA: "exclude" skimmed tokens from the answer (fixed) or score their "forward"ed state (original)
    qa_skimmed: str = "exclude"
    #: extractive QA, ``exclude``: a skimmed gold answer's span loss trains the "backbone" too, or only the "predictors"
    skimmed_answer_loss: str = "backbone"
    #: a token's keep weight over the layers: the "product" of every layer's straight-through decision (the original),
    #: or the product "until_skipped": the decisions after the one that skimmed it (no effect on the forward pass)
    #: then no longer gate the gradient that the span and skim losses send to that layer's predictor
    keep_weight_chain: str = "product"
    #: the share of the training steps over which the skim loss's weight rises linearly from 0 to ``skim_coefficient``
    #: (not in the original: 0, the full weight from the first step)
    coefficient_warmup: float = 0.0


class SkimPredictor(nn.Module):
    """LayerNorm - Linear - LayerNorm - GELU - Linear(2); class 1 = keep."""

    def __init__(self, hidden: int, inner: int, bias_init: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, inner), nn.LayerNorm(inner), nn.GELU(), nn.Linear(inner, 2))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        with torch.no_grad():  # "unbalanced" init: start by keeping everything
            last = self.net[-1]
            last.bias.copy_(torch.tensor([-bias_init, bias_init]) + torch.randn(2) * 0.02)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def transkimmer_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention that lets soft key weights (straight-through masks) carry gradients.

    Without ``skim_key_weights`` it is plain SDPA (evaluation / prune mode stays on the fused kernel).
    """
    weights = kwargs.pop("skim_key_weights", None)
    mode = kwargs.pop("skim_mask_mode", "additive")
    pad_mask = kwargs.pop("skim_pad_mask", None)
    if weights is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    w = weights[:, None, None, :].to(scores.dtype)
    # only padding is masked out here: skimmed keys must stay in the softmax so that the straight-through gradient
    # tells the predictor what keeping them would change (their weight w = 0 removes them in the forward pass)
    scores = scores.masked_fill(~pad_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = scores.softmax(-1) * w
    if mode != "multiply":
        # exp(s)*m / sum(exp(s)*m): exactly the softmax over the kept keys (= prune mode), differentiable in m;
        # "multiply" is the paper's code: no renormalisation
        probs = probs / probs.sum(-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
    probs = F.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


AttentionInterface.register(ATTN_NAME, transkimmer_attention)


@register
class Transkimmer(SkimStrategy):
    name = "transkimmer"
    config_class = TranskimmerConfig
    supported_tasks = ("qa", "cls")
    predictor_reads = "before"
    attn_implementation = ATTN_NAME

    def __init__(self, cfg: TranskimmerConfig):
        super().__init__(cfg)
        for key, allowed in (
            ("mask_mode", ("additive", "multiply")),
            ("eval_decision", ("argmax", "gumbel", "expected")),
            ("loss_denominator", ("real", "padded")),
            ("qa_skimmed", ("exclude", "forward")),
            ("skimmed_answer_loss", ("backbone", "predictors")),
            ("keep_weight_chain", ("product", "until_skipped")),
        ):
            if getattr(cfg, key) not in allowed:
                raise ConfigError(f"skim.{key} must be one of {allowed}, got {getattr(cfg, key)!r}")
        if cfg.train_mode != "mask":
            raise ConfigError("skim=transkimmer trains in mask mode (its gradients flow through the soft mask); set skim.train_mode=mask")
        if cfg.tau <= 0:
            raise ConfigError(f"skim.tau must be > 0, got {cfg.tau}")
        if not 0 <= cfg.coefficient_warmup <= 1:
            raise ConfigError(f"skim.coefficient_warmup is a share of the training steps in [0, 1], got {cfg.coefficient_warmup}")
        self.predictors = nn.ModuleDict()
        self.skim_layers: list[int] = []
        excluded = cfg.qa_skimmed == "exclude"
        self.skimmed_logit = -100.0 if excluded else None  # Block-Skim's value; None: score the forwarded state
        self.forwarded_state_gradient = not excluded
        if cfg.skimmed_answer_loss == "predictors" and not excluded:
            raise ConfigError("skim.skimmed_answer_loss=predictors needs skim.qa_skimmed=exclude (a forwarded answer is scored)")
        self.skimmed_answer_trains_backbone = cfg.skimmed_answer_loss == "backbone"

    @classmethod
    def check_compatible(cls, task: str, attn_implementation: str) -> None:
        super().check_compatible(task, attn_implementation)
        if attn_implementation not in ("auto", ATTN_NAME):
            raise ConfigError(
                f"skim=transkimmer brings its own attention function (SDPA when nothing is masked); "
                f"leave model.attn_implementation=auto (got {attn_implementation})"
            )

    def attach(self, encoder: AttachedEncoder) -> None:
        super().attach(encoder)
        self.skim_layers = self.resolve_layers(self.cfg.skim_layers, encoder.num_layers)
        hidden = encoder.hidden_size
        inner = self.cfg.predictor_hidden or hidden
        for i in self.skim_layers:
            self.predictors[str(i)] = SkimPredictor(hidden, inner, self.cfg.bias_init)

    # ---- decisions ---------------------------------------------------------------------------------------
    def _decide(self, logits: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """[B, n, 2] logits of the [B, n] ``alive`` tokens -> [B, n] keep in {0, 1} (float; straight-through gradients
        while training)."""
        if self.training or self.cfg.eval_decision == "gumbel":
            return F.gumbel_softmax(logits.float(), tau=self.cfg.tau, hard=True)[..., 1]
        if self.cfg.eval_decision == "expected":
            # round half to even; equal P(keep) go to the earlier position (stable sort: the same on every run)
            p = logits.float().softmax(-1)[..., 1].masked_fill(~alive, -1.0)  # dead tokens rank last, count 0
            count = p.clamp_min(0).sum(1, keepdim=True).round()
            return (p.argsort(dim=1, descending=True, stable=True).argsort(dim=1) < count).float()
        return (logits[..., 1] > logits[..., 0]).float()

    def _chain(self, m: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """The keep weight after this layer's straight-through decision ``m``. d(m * prev)/d prev is m: under "product"
        a token that a later predictor would also skim passes no gradient back to the layer that skimmed it (neither
        the span loss's pull nor the skim loss's); "until_skipped" leaves a skimmed token's weight as it was."""
        if self.cfg.keep_weight_chain == "until_skipped":
            return torch.where(prev > 0.5, m * prev, prev)
        return m * prev

    def before_layer(self, state: SkimState) -> torch.Tensor | None:
        i = state.layer
        extras = state.extras
        if i == 0:
            extras["tk_masks"] = []  # (m over current coords, real mask, padded m) per predictor layer
            extras["tk_decisions"] = {}  # layer -> this layer's own straight-through decision (skim.keep_pressure)
            state.keep_weight = None
        if i not in self.skim_layers:
            return None
        logits = self.predictors[str(i)](state.hidden)
        # [CLS] is kept below whatever is decided: it neither counts towards nor takes a place of the expected count
        m = self._decide(logits, state.alive & (state.pos != 0))
        m = torch.where(state.pos == 0, torch.ones_like(m), m)  # [CLS] is never skimmed
        extras["tk_decisions"][i] = m
        prev = state.keep_weight if state.keep_weight is not None else state.alive.to(m.dtype)
        m_pad = None
        if self.cfg.loss_denominator == "padded" and state.mode == "mask":
            # the original also runs the predictor on padding and counts it: track that product separately
            m_pad = self._chain(m, extras.get("tk_prev_pad", torch.ones_like(m)))
            extras["tk_prev_pad"] = m_pad
        m = self._chain(m, prev)  # cumulative: a skimmed token never returns (padding stays 0)
        extras["tk_masks"].append((m, state.alive & (m > 0.5), m_pad))
        if state.mode == "mask":
            state.keep_weight = m
        return m > 0.5

    def layer_kwargs(self, state: SkimState) -> dict:
        if state.mode != "mask" or state.keep_weight is None:
            return {}
        return {"skim_key_weights": state.keep_weight, "skim_mask_mode": self.cfg.mask_mode, "skim_pad_mask": state.real_full}

    # ---- loss --------------------------------------------------------------------------------------------
    def aux_losses(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        masks = out.extras.get("tk_masks") or []
        if not masks or not self.training:
            return {}
        real = out.real_tokens.clamp_min(1).to(masks[0][0].dtype)
        terms = []
        for m, _, m_pad in masks:
            if self.cfg.loss_denominator == "padded" and m_pad is not None:
                terms.append(m_pad.sum(1).mean() / m_pad.shape[1])
            else:
                terms.append((m.sum(1) / real).mean())
        skim_loss = torch.stack(terms).mean()
        return {"skim_loss": self.coefficient() * skim_loss}

    def coefficient(self) -> float:
        """The skim loss's weight at this point of the fit (``coefficient_warmup``)."""
        warmup = self.cfg.coefficient_warmup
        return self.cfg.skim_coefficient * (min(self.training_progress / warmup, 1.0) if warmup else 1.0)

    def train_diagnostics(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"skim_coefficient": torch.tensor(self.coefficient(), device=out.final_keep.device)}

    # ---- cost of the predictors (for FLOPs accounting) ---------------------------------------------------
    def predictor_macs(self, layer: int, tokens: torch.Tensor, hidden: int) -> torch.Tensor | int:
        if layer not in self.skim_layers:
            return 0
        inner = self.cfg.predictor_hidden or hidden
        return tokens * (hidden * inner + inner * 2)
