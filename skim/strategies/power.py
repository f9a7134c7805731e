"""PoWER-BERT (Goyal et al., ICML 2020: "PoWER-BERT: Accelerating BERT Inference via Progressive Word-vector
Elimination", arXiv:2001.08950; Keras code: github.com/IBM/PoWER-BERT, ``model/model.py`` and ``training.py``): after
every layer, keep the l_j tokens that received the most attention.

* Significance (paper §3, word-vector selection): Sig(w) = sum over heads h and words w' of A_h[w', w], the attention
  that w *receives*: the column sums of the layer's attention probabilities. Here padding and removed queries are
  excluded from the sums (the code sums every row of the padded input, padding queries included). The code averages
  over heads (the same ranking) and subtracts the diagonal, a token's attention to itself (``Soft_Extract.atten_col``):
  ``exclude_self: true`` is the code, ``false`` (default) the paper's formula.
* Extract layer (paper §3): keep the top-l_j tokens by significance, in their original order. Paper and code place it
  after the self-attention sub-layer of encoder j, so encoder j's FFN already runs on l_j vectors; this framework
  decides between layers, after layer j's whole block (its FFN runs on every token that entered the layer; the
  analytic FLOPs count that). Every layer has an extract, the last one included (as the code): for classification only
  [CLS] is read after it; for QA a removed token cannot be the answer (``skimmed_logit``, Block-Skim's -100), so a last
  ``retention`` entry of 1.0 keeps every answer candidate.
* [CLS] is always kept (the code's ``Hard_Extract`` keeps index 0 plus the top l_j - 1 others). ``protect_special``
  (default true) also keeps the data's ``protect_mask`` tokens (QA: question and [SEP]): a deviation, PoWER-BERT covers
  classification only. l_j counts the protected tokens: an example keeps max(l_j, its protected tokens).
* Retention configuration (paper §3, soft-extract layer; code ``Soft_Extract``), ``stage: soft`` (configuration
  search): learnable r_j[k] in [0, 1] for every layer j and sorted rank k < N = ``max_seq_length``, initialised to 1;
  the output of the token of significance rank k is multiplied by r_j[k] (protected tokens take the top ranks), and
  loss += ``mass_coefficient`` * sum_j j * mass_j with mass_j = sum_k r_j[k] and j = 1..L (the code: a Keras L1
  regulariser ``LAMBDA * layer_idx`` on W, summed over all N entries, not normalised, added to the batch-mean task
  loss). The code clips r to [0, 1] after every optimiser step (a Keras constraint); here the parameter is projected
  in place at the start of every training forward, so every forward uses clipped values (a checkpoint may hold values
  one step outside, and every reader clamps). The soft stage's validation prunes with the learned l_j (hard extract,
  no multipliers): the model the re-training stage starts from.
* Learned l_j = ceil(mass_j) (``rounding: ceil``, the paper; the code takes ``int(sum(W))``, i.e. ``floor``, with a
  minimum of 1), made non-increasing over layers with a running minimum (as the code), a count over N.
* ``stage: hard`` (re-training and inference): top-k with l_j from ``retention``, or, with ``retention: null``, from the
  retention parameters of a soft-stage checkpoint (``model.init_checkpoint=<soft run>/checkpoints/last.ckpt``); a hard
  stage with neither is a ``ConfigError`` at its first forward rather than a silent dense model.
* Units, since batches here are padded per batch (the paper pads every input to N): ``retention_unit: tokens`` is the
  paper's count over N; the code's padding receives no attention and ranks last, so an example of n real tokens keeps
  min(l_j, n): exactly what ``tokens`` does. ``fraction`` (default for a hand-written list) keeps ceil(retention_j * n)
  of each example's n real tokens (length-adaptive, like ``skim=forced``; no paper counterpart). A learned retention is
  always in tokens. Lists shorter than the model repeat their last value; values must not increase (the code's
  ``retention_parser``).
* Learning rates: the code trains r with its own rate (``LR_SOFT_EXTRACT``, 1e-4..3e-3, vs ``LR_BERT`` 2e-5..6e-5);
  here r = s * p with a parameter p: under Adam a step moves p by about lr (``optim.skim_lr`` when set), hence r by
  about s * lr, with s = ``retention_lr_scale`` (the code's ratio: MRPC 3e-3 / 6e-5 = 50). s is saved beside p (buffer
  ``retention_scale``), so a model that loads the checkpoint reads the same r.
* In training the eager attention probabilities come after attention dropout (HF); the Keras attention has no dropout
  on them. Column sums over many queries of dropped-out (rescaled) probabilities are unbiased estimates.
* Cost: the significance is H * n^2 additions and a sort of n per layer, no multiply-accumulates, so
  ``predictor_macs`` is 0 (``torch.utils.flop_counter`` counts matmuls only; the analytic FLOPs match it). The full
  probability matrix needs eager attention (fused kernels do not return it).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from skim.errors import ConfigError
from skim.state import AttachedEncoder, EncoderOutput, SkimState
from skim.strategies.base import SkimStrategy, StrategyConfig, attention_received, register


@dataclass
class PowerConfig(StrategyConfig):
    name: str = "power"
    #: ``soft``: configuration search (learn the retention with soft-extract layers); ``hard``: extract layers with a
    #: fixed retention (re-training and inference)
    stage: str = "soft"
    #: hard stage: per-layer retention (see ``retention_unit``); None = learned, from a soft-stage checkpoint's weights
    retention: list[float] | None = None
    #: ``fraction`` of each example's real tokens, or ``tokens`` (the paper's counts over ``max_seq_length``)
    retention_unit: str = "fraction"
    #: lambda of the mass regulariser, lambda * sum_j j * mass_j (paper scripts: 1e-4 .. 7e-3 on GLUE; MRPC 3e-3)
    mass_coefficient: float = 3.0e-3
    #: the retention parameters move this many times faster than optim.lr (LR_SOFT_EXTRACT / LR_BERT; MRPC: 50)
    retention_lr_scale: float = 50.0
    #: N: retention parameters per layer (one per sorted rank); the data's max_seq_length
    max_seq_length: int = 512
    #: learned l_j from mass_j: ``ceil`` (paper), ``floor`` (code: int(sum)), ``round``
    rounding: str = "ceil"
    #: True: significance without a token's attention to itself (the code); False: the paper's column sum
    exclude_self: bool = False
    #: also keep the data's protected tokens (QA: question and [SEP]); [CLS] is always kept
    protect_special: bool = True
    #: QA logit of removed tokens (they cannot be the answer)
    skimmed_logit: float = -100.0


STAGES = ("soft", "hard")
UNITS = ("fraction", "tokens")
ROUNDINGS = ("ceil", "floor", "round")


def significance(probs: torch.Tensor, alive: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """[B, H, n, n] attention probabilities -> [B, n] float32 attention received by every key: summed over heads and over
    the live queries (``alive`` [B, n]); ``exclude_self`` leaves out each token's attention to itself."""
    received = attention_received(probs, alive)
    if exclude_self:
        received = received - probs.diagonal(dim1=-2, dim2=-1).sum(1, dtype=torch.float32) * alive
    return received


def significance_rank(score: torch.Tensor, alive: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """[B, n] 0-based rank of every token by descending significance: protected tokens first, dead ones last, ties in
    sequence order (so a packed sequence, which keeps the original order, ranks exactly like the full-length one)."""
    key = score.masked_fill(protected, float("inf")).masked_fill(~alive, float("-inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    ranks = torch.arange(key.shape[1], device=key.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ranks)


def learned_counts(mass: torch.Tensor, rounding: str = "ceil") -> torch.Tensor:
    """[L] masses -> [L] long retention l_j: rounded, at least 1, non-increasing over layers (running minimum)."""
    if rounding == "ceil":
        counts = torch.ceil(mass - 1e-4)  # float noise of a sum of N values must not add a token
    elif rounding == "floor":
        counts = torch.floor(mass + 1e-4)
    else:
        counts = torch.round(mass)
    return torch.cummin(counts.clamp_min(1), dim=0).values.long()


@register
class PowerBert(SkimStrategy):
    name = "power"
    config_class = PowerConfig
    supported_tasks = ("qa", "cls")
    requires_attention_probs = True

    def __init__(self, cfg: PowerConfig):
        super().__init__(cfg)
        if cfg.stage not in STAGES:
            raise ConfigError(f"skim.stage must be one of {STAGES}, got {cfg.stage!r}")
        if cfg.retention_unit not in UNITS:
            raise ConfigError(f"skim.retention_unit must be one of {UNITS}, got {cfg.retention_unit!r}")
        if cfg.rounding not in ROUNDINGS:
            raise ConfigError(f"skim.rounding must be one of {ROUNDINGS}, got {cfg.rounding!r}")
        if cfg.mass_coefficient < 0:
            raise ConfigError(f"skim.mass_coefficient must be >= 0, got {cfg.mass_coefficient}")
        if cfg.retention_lr_scale <= 0:
            raise ConfigError(f"skim.retention_lr_scale must be > 0, got {cfg.retention_lr_scale}")
        if cfg.max_seq_length < 1:
            raise ConfigError(f"skim.max_seq_length must be >= 1, got {cfg.max_seq_length}")
        if cfg.retention is not None:
            self._check_retention(cfg)
        self.skimmed_logit = cfg.skimmed_logit
        self.retention = nn.ParameterList()
        # persistent: a model that loads these weights (hard stage, evaluation) reads the same r = scale * p
        self.register_buffer("retention_scale", torch.tensor(float(cfg.retention_lr_scale)))
        # soft-stage training forwards so far: a hard stage with retention=null refuses untrained retention parameters
        self.register_buffer("soft_steps", torch.zeros((), dtype=torch.long))
        self._plan: tuple[str, list[float]] | None = None  # the hard extract's (unit, per-layer values) this forward

    @staticmethod
    def _check_retention(cfg: PowerConfig) -> None:
        values = list(cfg.retention)
        if cfg.stage == "soft":
            raise ConfigError("skim.retention is for stage=hard: the soft stage learns it (set skim.retention=null)")
        if not values:
            raise ConfigError("skim.retention is empty; give one value per layer (or null)")
        if cfg.retention_unit == "fraction" and any(not 0.0 < v <= 1.0 for v in values):
            raise ConfigError(f"skim.retention fractions must lie in (0, 1], got {values}")
        if cfg.retention_unit == "tokens" and any(v < 1 or v != int(v) for v in values):
            raise ConfigError(f"skim.retention token counts must be whole numbers >= 1, got {values}")
        if any(b > a for a, b in pairwise(values)):
            raise ConfigError(
                f"skim.retention must be non-increasing over layers (a removed token never returns), got {values}"
            )

    def attach(self, encoder: AttachedEncoder) -> None:
        super().attach(encoder)
        L = encoder.num_layers
        if self.cfg.retention is not None and len(self.cfg.retention) > L:
            raise ConfigError(
                f"skim.retention has {len(self.cfg.retention)} values for a {L}-layer model (at most {L})"
            )
        soft = self.cfg.stage == "soft"
        init = 1.0 / self.cfg.retention_lr_scale  # r = 1 (the code's Constant(1) initialiser)
        for _ in range(L):
            # 1-D parameters: the optimiser's no-decay group (the code's W has only its L1 regulariser)
            self.retention.append(nn.Parameter(torch.full((self.cfg.max_seq_length,), init), requires_grad=soft))

    # ---- retention -----------------------------------------------------------------------------------------------
    def retention_values(self, layer: int) -> torch.Tensor:
        """r_layer: [N] retention parameters (differentiable in the soft stage)."""
        return self.retention[layer] * self.retention_scale

    def mass(self) -> torch.Tensor:
        """[L] mass_j = sum_k r_j[k] of the clipped parameters."""
        return torch.stack([self.retention_values(j).detach().clamp(0, 1).sum() for j in range(self.num_layers)])

    def learned_retention(self) -> list[int]:
        """The learned retention configuration l_j (tokens), rounded from the masses, non-increasing."""
        return learned_counts(self.mass(), self.cfg.rounding).tolist()

    def _project(self) -> None:
        """Clip r to [0, 1] (the code's constraint after each optimiser step; here before each training forward)."""
        with torch.no_grad():
            for p in self.retention:
                p.clamp_(0.0, 1.0 / float(self.retention_scale))

    def _soft_training(self) -> bool:
        return self.cfg.stage == "soft" and self.training

    def _hard_plan(self) -> tuple[str, list[float]]:
        """(unit, one value per layer) of the hard extract layers."""
        if self.cfg.retention is not None:
            values = list(self.cfg.retention)
            return self.cfg.retention_unit, values + [values[-1]] * (self.num_layers - len(values))
        if self.cfg.stage == "hard" and int(self.soft_steps) == 0:
            raise ConfigError(
                "skim=power stage=hard needs a retention: skim.retention=[...] or the weights of a soft-stage run "
                "(model.init_checkpoint=<soft run>/checkpoints/last.ckpt); these retention parameters were never trained"
            )
        return "tokens", [float(v) for v in self.learned_retention()]

    # ---- hooks -------------------------------------------------------------------------------------------------
    def before_layer(self, state: SkimState) -> torch.Tensor | None:
        if state.layer == 0:
            state.extras["power_significance"] = {}
            state.extras["power_keep"] = {}
            # decided once per forward (a learned retention reads the parameters: one host sync, not one per layer)
            self._plan = None
            if self._soft_training():
                self._project()
                self.soft_steps += 1
            else:
                self._plan = self._hard_plan()
        return None

    def needs_attention_probs(self, layer: int) -> bool:
        if self._soft_training():
            return True
        unit, values = self._plan
        return values[layer] < (1.0 if unit == "fraction" else self.cfg.max_seq_length)

    def _protected(self, state: SkimState) -> torch.Tensor:
        protected = state.pos == 0  # [CLS]
        if self.cfg.protect_special:
            protected = protected | state.gather_full(state.protect_full)
        return protected & state.alive

    def after_layer(self, state: SkimState, attn_probs: torch.Tensor | None) -> torch.Tensor | None:
        if attn_probs is None:
            return None
        j = state.layer
        n = state.alive.shape[1]
        # the ranking is not differentiable (the soft stage learns r, not the significance)
        score = significance(attn_probs.detach(), state.alive, self.cfg.exclude_self)
        state.extras["power_significance"][j] = (score, state.pos)
        protected = self._protected(state)
        rank = significance_rank(score, state.alive, protected)
        if self._soft_training():
            if n > self.cfg.max_seq_length:
                raise ConfigError(
                    f"a batch of {n} tokens is longer than skim.max_seq_length={self.cfg.max_seq_length} "
                    "(one retention parameter per rank); set it to data.max_seq_length"
                )
            weight = self.retention_values(j)[rank]  # soft extract: r_j[rank of the token]
            weight = torch.where(state.alive, weight, torch.ones_like(weight))
            state.hidden = state.hidden * weight[..., None].to(state.hidden.dtype)
            if state.mode == "mask":
                # the encoder already merged this layer's unscaled output into the forwarded states
                state.forwarded = torch.where(state.alive[..., None], state.hidden, state.forwarded)
            return None
        unit, values = self._plan
        if unit == "fraction":
            budget = (state.real_full.sum(1).double() * values[j]).ceil().long()
        else:
            budget = torch.full_like(state.alive[:, 0], int(values[j]), dtype=torch.long)
        budget = torch.maximum(budget.clamp_min(1), protected.sum(1))
        keep = state.alive & (rank < budget[:, None])
        full = torch.zeros_like(state.real_full)
        state.extras["power_keep"][j] = (
            full.scatter(1, state.pos, keep) & state.real_full if state.mode == "prune" else keep
        )
        return keep

    # ---- training ----------------------------------------------------------------------------------------------
    def aux_losses(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Soft stage: lambda * sum_j j * mass_j (j = 1..L), the code's per-layer L1 regulariser."""
        if not self._soft_training():
            return {}
        total = sum((j + 1) * self.retention_values(j).sum() for j in range(self.num_layers))
        return {"skim_loss": self.cfg.mass_coefficient * total}

    def train_diagnostics(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Soft stage: mass_j and the l_j it would give now (does the configuration search converge?)."""
        if self.cfg.stage != "soft":
            return {}
        mass = self.mass()
        counts = learned_counts(mass, self.cfg.rounding)
        res = {f"mass_layer{j}": mass[j] for j in range(self.num_layers)}
        res.update({f"retention_layer{j}": counts[j].float() for j in range(self.num_layers)})
        return res

    # cost: the base's predictor_macs (0): column sums (H * n^2 additions) and a sort, no multiply-accumulates

    # ---- evaluation: the retention in use (skim_stats.json hands a learned one to the hard stage) ---------------
    def eval_stat_size(self) -> int:
        return 1

    def eval_stats(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return torch.tensor([float(out.final_keep.shape[0])], device=out.final_keep.device)

    def _plan_or_none(self) -> tuple[str, list[float]] | None:
        try:
            return self._hard_plan()
        except ConfigError:
            return None

    def format_eval_stats(self, totals: torch.Tensor) -> dict[str, float]:
        res: dict[str, float] = {}
        plan = self._plan_or_none()
        if plan is not None:
            res.update({f"retention_layer{j}": float(v) for j, v in enumerate(plan[1])})
        if self.cfg.stage == "soft":
            res.update({f"mass_layer{j}": float(m) for j, m in enumerate(self.mass())})
        return res

    def eval_report(self, totals: torch.Tensor) -> dict[str, Any]:
        plan = self._plan_or_none()
        # torchmetrics returns a size-1 sum as a 0-dim tensor
        report: dict[str, Any] = {"stage": self.cfg.stage, "examples": float(totals.reshape(-1)[0])}
        if plan is not None:
            unit, values = plan
            report.update(retention_unit=unit, retention=[int(v) for v in values] if unit == "tokens" else values)
        if int(self.soft_steps) > 0:
            learned = self.learned_retention()
            report.update(
                soft_steps=int(self.soft_steps),
                mass=[float(m) for m in self.mass()],
                learned_retention=learned,
                hard_stage_overrides=f"skim.stage=hard skim.retention_unit=tokens skim.retention=[{','.join(map(str, learned))}]",
            )
        return report
