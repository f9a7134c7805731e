"""Learned Token Pruning (Kim et al., KDD 2022, arXiv:2107.00910): after each layer, tokens whose attention-based
importance falls below that layer's learned threshold are removed from the following layers.

Method (paper §3, Methodology: threshold token pruning, then the learnable threshold with its soft mask, regulariser
and training procedure; code: github.com/kssteven418/LTP, ``src/transformers/models/ltp/prune_modules.py``
``AbsoluteThresholdTokenPruner``, ``modeling_ltp.py`` ``LTPLayer``, ``src/transformers/trainer.py`` for the
regulariser and the threshold optimiser, ``run.py`` for the two stages):

* importance of token i at layer l: the attention it receives, averaged over heads and queries,
  ``s_l(i) = 1 / (H * n) * sum_h sum_j A_h(j -> i)``, with padding and already pruned queries left out of the sum;
* hard pruning (inference, and stage 2): keep i iff ``s_l(i) >= theta_l``; a pruned token never returns;
* stage 1 (``stage: soft``, training only): nothing is removed; the layer's output is multiplied by the soft mask
  ``m = sigmoid((s_l - theta_l) / temperature)`` (the code: ``layer_output * mask`` after the FFN), the thresholds
  are parameters, and the loss adds ``mask_coefficient * sum_l mean(m_l)`` (the paper's L1 norm of the masks; the code
  sums ``mask.mean()`` over layers). Validation of a soft-stage model prunes hard, as the code's evaluation does;
* stage 2 (``stage: hard``): the thresholds are frozen (``requires_grad=False``) and the model is fine-tuned with
  hard pruning. Run it with ``model.init_checkpoint=<stage-1 run>/checkpoints/last.ckpt``: the thresholds are the
  strategy parameter ``encoder.strategy.thresholds`` and travel with the checkpoint. Stage 2 from a dense checkpoint
  (thresholds at their init) is the code's "manual threshold" baseline.

Init as the code: ``theta_l = final_threshold * l / num_layers`` (0-based ``l``, the code's ``module_num``; the README
says the last layer gets ``final_threshold``, the code gives it ``final_threshold * (L - 1) / L``). The code's layer 0
has threshold 0, which neither prunes nor learns, so ``skim_layers: null`` means layers 1..L-1. The thresholds are a
1-D parameter, so they train at ``optim.lr`` with no weight decay: the code's default (its ``--lr_threshold`` is
optional and its ``--weight_decay_threshold`` defaults to 0); ``optim.skim_lr`` gives them their own rate, as
``--lr_threshold`` does (it applies to every strategy parameter, here only the thresholds).

Deviations and flags:

* ``importance_norm`` – ``live`` (default): divide by the live queries of each example (the paper's ``1/n`` with
  ``n`` the current sequence; independent of the batch's padding). ``padded``: the code's ``mean(dim=1)`` over every
  query row of the padded batch, i.e. divide by the padded input length; that is the code exactly with
  ``data.padding=max_length`` (its GLUE scripts pad to 128) and depends on the batch with dynamic padding. Both give
  the same scores in mask and prune mode. The README's ``final_threshold`` 0.01 was tuned for ``padded`` at 128.
* ``loss_denominator`` – ``real`` (default): per example, the mean mask over its real tokens; ``padded``: the code's
  mean over every position of the padded batch (padding has importance 0 and mask ``sigmoid(-theta / T)``).
* [CLS] is always kept (and its soft mask is 1), and with ``protect_special`` (default) the strategy's protected
  tokens too (for QA the question and [SEP]); the code protects nothing. For QA, pruned tokens cannot be the answer
  (``skimmed_logit`` -100, Block-Skim's rule; the public code is GLUE-only); in stage-2 training a pruned gold answer
  gives a large but finite span loss.
* the code floors the hard threshold at 1e-5 and skips a layer whose threshold is exactly 0; here a token is kept iff
  ``s >= theta`` (the floor only matters for tokens that no live query attends to).
* the decision is taken after the whole layer, so a token pruned at layer l still ran that layer's FFN; the code's
  FLOPs count assumes it skips it (it masks only attention keys, so its pruning is simulated, not realised).
* hard decisions in ``mask`` mode remove pruned tokens as attention keys (additive mask) and their queries from the
  importance, as the code's hard masking; in ``prune`` mode they are physically removed; both give the same outputs.
  As the code, soft-masked tokens stay keys and queries (only their states are scaled), and in training the importance
  reads the probabilities after attention dropout.

Predictor cost: the importance is a masked sum over heads and queries of the attention probabilities that the layer
has computed anyway, ``H * n^2`` additions and no multiplications (with BERT-base shapes < 1 % of the ``2 n^2 d``
attention MACs), like the softmax that the analytic FLOPs leave out; ``predictor_macs`` is 0 and the sum is written
without a matmul, so ``torch.utils.flop_counter`` agrees. The probabilities need eager attention
(``model.attn_implementation=auto`` picks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from skim.errors import ConfigError
from skim.state import AttachedEncoder, EncoderOutput, SkimState
from skim.strategies.base import SkimStrategy, StrategyConfig, attention_received, register


@dataclass
class LTPConfig(StrategyConfig):
    name: str = "ltp"
    #: ``soft``: stage 1, learn the thresholds with sigmoid soft masks (nothing removed in training); ``hard``: stage 2,
    #: thresholds frozen, hard pruning in training too
    stage: str = "soft"
    #: threshold init: theta_l = final_threshold * l / num_layers (the code's final_token_threshold; README: 0.01)
    final_threshold: float = 0.01
    #: T of the soft mask sigmoid((s - theta) / T) (the code's default 1e-3; the paper searched 1e-4 .. 2e-3)
    temperature: float = 1e-3
    #: lambda of the L1 mask regulariser (the code's --lambda_threshold; README: 0.01 .. 0.2)
    mask_coefficient: float = 0.1
    #: importance denominator: "live" queries of the example (paper) or the "padded" length (the code)
    importance_norm: str = "live"
    #: regulariser mean over each example's "real" tokens, or over the "padded" batch (the code)
    loss_denominator: str = "real"
    #: never prune the strategy's protected tokens (QA: question, [SEP]); [CLS] is always kept
    protect_special: bool = True
    #: layers that prune after running (None = 1..L-1: the code's layer 0 has threshold 0)
    skim_layers: list[int] | None = None
    #: QA logit of pruned tokens (they cannot be the answer)
    skimmed_logit: float = -100.0


def token_importance(
    probs: torch.Tensor, alive: torch.Tensor, norm: str = "live", padded_length: int | None = None
) -> torch.Tensor:
    """[B, H, n, n] attention probabilities (query, key) and the [B, n] live tokens that ran the layer -> the [B, n]
    mean attention each token receives (0 for dead ones): a sum over heads and live queries, no matmul.

    ``norm="live"`` divides by H x the live queries of each example; ``"padded"`` by H x ``padded_length`` (the code's
    padded input length, default n; a packed sequence in prune mode is shorter, so the encoder passes the original)."""
    B, H, n, _ = probs.shape
    if padded_length is None:
        padded_length = n
    received = attention_received(probs, alive)
    if norm == "live":
        denom = alive.sum(1, keepdim=True).clamp_min(1).to(received.dtype) * H
    else:
        denom = torch.full((B, 1), float(H * padded_length), dtype=received.dtype, device=received.device)
    return (received / denom).masked_fill(~alive, 0.0)


@register
class LearnedTokenPruning(SkimStrategy):
    name = "ltp"
    config_class = LTPConfig
    supported_tasks = ("qa", "cls")
    requires_attention_probs = True

    def __init__(self, cfg: LTPConfig):
        super().__init__(cfg)
        for key, allowed in (
            ("stage", ("soft", "hard")),
            ("importance_norm", ("live", "padded")),
            ("loss_denominator", ("real", "padded")),
        ):
            if getattr(cfg, key) not in allowed:
                raise ConfigError(f"skim.{key} must be one of {allowed}, got {getattr(cfg, key)!r}")
        if not (cfg.temperature > 0 and math.isfinite(cfg.temperature)):
            raise ConfigError(f"skim.temperature must be a finite number > 0, got {cfg.temperature}")
        if not (cfg.mask_coefficient >= 0 and math.isfinite(cfg.mask_coefficient)):
            raise ConfigError(f"skim.mask_coefficient must be a finite number >= 0, got {cfg.mask_coefficient}")
        if not (cfg.final_threshold >= 0 and math.isfinite(cfg.final_threshold)):
            raise ConfigError(f"skim.final_threshold must be a finite number >= 0, got {cfg.final_threshold}")
        self.skimmed_logit = cfg.skimmed_logit
        self.skim_layers: list[int] = []
        self.thresholds = nn.Parameter(torch.zeros(0), requires_grad=False)

    def attach(self, encoder: AttachedEncoder) -> None:
        super().attach(encoder)
        L = encoder.num_layers
        layers = self.cfg.skim_layers if self.cfg.skim_layers is not None else list(range(1, L))
        self.skim_layers = self.resolve_layers(layers, L)
        init = torch.tensor([self.cfg.final_threshold * i / L for i in range(L)])
        # learnt in stage 1 only; a parameter either way, so that init_checkpoint carries it from stage 1 to stage 2
        self.thresholds = nn.Parameter(init, requires_grad=self.cfg.stage == "soft")

    def needs_attention_probs(self, layer: int) -> bool:
        return layer in self.skim_layers

    def _soft(self) -> bool:
        return self.training and self.cfg.stage == "soft"

    def _protected(self, state: SkimState) -> torch.Tensor:
        cls = state.pos == 0
        return cls | state.gather_full(state.protect_full) if self.cfg.protect_special else cls

    def after_layer(self, state: SkimState, attn_probs: torch.Tensor | None) -> torch.Tensor | None:
        i = state.layer
        if i not in self.skim_layers:
            return None
        if attn_probs is None:
            raise ConfigError("skim=ltp needs attention probabilities: use model.attn_implementation=eager (or auto)")
        scores = token_importance(attn_probs, state.alive, self.cfg.importance_norm, state.real_full.shape[1])
        theta = self.thresholds[i]
        protected = self._protected(state)
        state.extras.setdefault("ltp_scores", {})[i] = (scores.detach(), state.alive.clone())
        if not self._soft():
            return (scores >= theta) | protected
        m = torch.sigmoid((scores - theta) / self.cfg.temperature)
        m = torch.where(protected, torch.ones_like(m), m)
        state.extras.setdefault("ltp_masks", {})[i] = (m, state.alive.clone())
        # the code: layer_output * mask; padding and dead tokens are left as they are
        scale = torch.where(state.alive, m, torch.ones_like(m)).to(state.hidden.dtype)
        state.hidden = state.hidden * scale[..., None]
        if state.mode == "mask":
            # the encoder stored the unscaled output as the tokens' forwarded state: the heads read the scaled one
            state.forwarded = torch.where(state.alive[..., None], state.hidden, state.forwarded)
        return None

    # ---- training ----------------------------------------------------------------------------------------
    def mask_regulariser(self, out: EncoderOutput) -> torch.Tensor | None:
        """sum over pruning layers of the mean soft mask (unweighted), or None outside soft-stage training."""
        masks = out.extras.get("ltp_masks")
        if not masks:
            return None
        terms = []
        for m, alive in masks.values():
            if self.cfg.loss_denominator == "padded":
                terms.append(m.mean())
            else:
                terms.append(((m * alive).sum(1) / alive.sum(1).clamp_min(1)).mean())
        return torch.stack(terms).sum()

    def aux_losses(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        reg = self.mask_regulariser(out)
        if reg is None:
            return {}
        return {"skim_loss": self.cfg.mask_coefficient * reg}

    def train_diagnostics(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per pruning layer: the threshold, the share of the live tokens at or above it (what hard pruning keeps there)
        and, in stage 1, the mean soft mask of the live tokens."""
        res: dict[str, torch.Tensor] = {}
        for i in self.skim_layers:
            res[f"threshold_layer{i}"] = self.thresholds[i].detach()
        for i, (s, alive) in out.extras.get("ltp_scores", {}).items():
            above = (s >= self.thresholds[i].detach()) & alive
            res[f"above_threshold_layer{i}"] = above.sum() / alive.sum().clamp_min(1)
        for i, (m, alive) in out.extras.get("ltp_masks", {}).items():
            res[f"soft_keep_layer{i}"] = m.detach()[alive].mean() if alive.any() else m.new_tensor(float("nan"))
        return res

    # cost: the base's predictor_macs (0): the importance is H * n^2 additions, no MACs (module docstring)

    # ---- evaluation: the thresholds in use ------------------------------------------------------------------
    def eval_stat_size(self) -> int:
        return 1

    def eval_stats(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return torch.ones(1, device=out.final_keep.device)  # batches seen; the thresholds are read at the end

    def format_eval_stats(self, totals: torch.Tensor) -> dict[str, float]:
        return {f"threshold_layer{i}": float(self.thresholds[i].detach()) for i in self.skim_layers}

    def eval_report(self, totals: torch.Tensor) -> dict[str, Any]:
        return {
            "stage": self.cfg.stage,
            "importance_norm": self.cfg.importance_norm,
            "skim_layers": list(self.skim_layers),
            "thresholds": self.thresholds.detach().tolist(),
        }
