"""Validation callbacks: per-layer kept-token ratio and analytic FLOPs, logged as ``val/skim/*`` and ``val/flops/*``.

Both read what the task module's ``validation_step`` returns (per-example token counts from the skim encoder) and
sum them with torchmetrics states, so the numbers are exact across DDP ranks (counts are summed, then divided).
Padding is never counted; [CLS]/question/[SEP] ("special": every real token outside the context / text proper) are
reported separately, because a strategy may be told never to drop them.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from skim.errors import ConfigError
from skim.metrics.counts import SumVector
from skim.metrics.flops import EncoderShape, encoder_macs, head_macs
from skim.utils.run import write_json


def _layer_stats(outputs: Any) -> dict[str, torch.Tensor] | None:
    return outputs.get("skim") if isinstance(outputs, dict) else None


class _Accumulating(pl.Callback):
    def __init__(self):
        self._metrics: dict[str, SumVector] = {}

    def _acc(self, name: str, value: torch.Tensor, device) -> None:
        value = value.detach().reshape(-1).to(device)  # counts built on the CPU join the metric's device
        if name not in self._metrics:
            self._metrics[name] = SumVector(value.numel()).to(device)
        self._metrics[name].update(value)

    def _totals(self) -> dict[str, torch.Tensor]:
        out = {k: m.compute().reshape(-1) for k, m in self._metrics.items()}
        for m in self._metrics.values():
            m.reset()
        return out

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        for m in self._metrics.values():
            m.reset()


class SkimStatsCallback(_Accumulating):
    """``val/skim/kept_layer{i}``: tokens entering layer i / real tokens (padding excluded), summed over examples;
    ``val/skim/kept_mean``; ``val/skim/kept_context_layer{i}`` without the special tokens; ``val/skim/kept_example_mean``:
    the mean over examples of each example's own ratio (differs from the token-weighted ratio on mixed lengths)."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        s = _layer_stats(outputs)
        if s is None:
            return
        kept, real, special = s["kept"].double(), s["real"].double(), s["special"].double()
        dev = pl_module.device
        self._acc("kept", kept.sum(1), dev)
        self._acc("special", special.sum(1), dev)
        self._acc("real", real.sum().reshape(1), dev)
        self._acc("real_special", s["special_total"].double().sum().reshape(1), dev)
        self._acc("example_ratio", (kept / real.clamp_min(1)).mean(0).sum().reshape(1), dev)
        self._acc("examples", torch.tensor([float(real.numel())]), dev)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._metrics or trainer.sanity_checking:
            self._totals()
            return
        t = self._totals()
        real, real_special = float(t["real"][0]), float(t["real_special"][0])
        kept = (t["kept"] / max(real, 1.0)).tolist()
        ctx = ((t["kept"] - t["special"]) / max(real - real_special, 1.0)).tolist()
        for i, (r, c) in enumerate(zip(kept, ctx)):
            pl_module.log(f"val/skim/kept_layer{i}", r)
            pl_module.log(f"val/skim/kept_context_layer{i}", c)
        pl_module.log("val/skim/kept_mean", sum(kept) / len(kept))
        pl_module.log("val/skim/kept_example_mean", float(t["example_ratio"][0]) / max(float(t["examples"][0]), 1.0))


class SkimmedTokensCallback(_Accumulating):
    """``skimmed_tokens.json`` in the run directory: per layer, the ``top_k`` tokens most often kept out of it, each
    with how often it occurs in the evaluated text: what a skimmer learnt to drop (README, "Transkimmer on SQuAD
    with a skimmed answer's loss kept off the span logits": periods and [SEP] before layer 0). Counts are per
    vocabulary id, summed over examples and DDP ranks; padding never counts."""

    FILE = "skimmed_tokens.json"

    def __init__(self, top_k: int = 20):
        super().__init__()
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"callbacks.skimmed_tokens.top_k must be an integer of at least 1, got {top_k!r}")
        self.top_k = top_k

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        pl_module.encoder.record_alive = True  # the task's validation_step then returns which tokens enter each layer

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        alive = (_layer_stats(outputs) or {}).get("alive")
        if alive is None:
            return
        vocab = pl_module.encoder.backbone.config.vocab_size
        ids, real = batch["input_ids"], batch["attention_mask"].bool()
        self._acc("seen", torch.bincount(ids[real], minlength=vocab), pl_module.device)
        dropped = torch.stack([torch.bincount(ids[real & ~a], minlength=vocab) for a in alive])
        self._acc("dropped", dropped, pl_module.device)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.encoder.record_alive = False
        totals = self._totals()
        if not totals or trainer.sanity_checking or not trainer.is_global_zero:
            return
        seen = totals["seen"]
        dropped = totals["dropped"].reshape(-1, seen.numel())
        convert = trainer.datamodule.tokenizer.convert_ids_to_tokens
        layers = []
        for i, row in enumerate(dropped):
            top = [t for t in row.argsort(descending=True)[: self.top_k].tolist() if row[t] > 0]
            layers.append({"layer": i, "tokens_skimmed": int(row.sum()),
                           "top": [{"token": convert(t), "skimmed": int(row[t]), "seen": int(seen[t])} for t in top]})  # fmt: skip
        write_json(os.path.join(pl_module.files_dir, self.FILE), {"tokens_seen": int(seen.sum()), "not_entering_layer": layers})


class FlopsCallback(_Accumulating):
    """Analytic FLOPs per example (see ``skim.metrics.flops``) of the skimming model and of the dense model on the
    same examples: ``val/flops/skim_gflops``, ``val/flops/dense_gflops`` (dense, same padding-free token counts),
    ``val/flops/dense_padded_gflops`` (dense on the padded batch, as the batches were fed), ``val/flops/speedup``
    (dense / skim) and ``val/flops/speedup_vs_padded``. Predictor and task-head costs are included."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        s = _layer_stats(outputs)
        if s is None:
            return
        shape = EncoderShape.of(pl_module.encoder.backbone.config)
        strategy = pl_module.strategy
        task = pl_module.task
        hidden = shape.hidden
        num_labels = getattr(pl_module, "num_labels", None) or 2
        kept, real = s["kept"], s["real"]
        skim = encoder_macs(kept, shape, lambda i, t: strategy.predictor_macs(i, t, hidden), s["pred_tokens"], input_tokens=real)
        skim = skim + head_macs(task, s["final"], shape, num_labels)
        dense_tokens = real[None].expand_as(kept)
        dense = encoder_macs(dense_tokens, shape) + head_macs(task, real, shape, num_labels)
        padded_tokens = torch.full_like(kept, int(s["padded_len"]))
        padded = encoder_macs(padded_tokens, shape) + head_macs(task, padded_tokens[0], shape, num_labels)
        dev = pl_module.device
        self._acc("flops", torch.stack([2 * skim.sum(), 2 * dense.sum(), 2 * padded.sum(), torch.tensor(float(real.numel()), dtype=torch.float64, device=skim.device)]), dev)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._metrics or trainer.sanity_checking:
            self._totals()
            return
        skim, dense, padded, n = self._totals()["flops"].tolist()
        n = max(n, 1.0)
        pl_module.log("val/flops/skim_gflops", skim / n / 1e9)
        pl_module.log("val/flops/dense_gflops", dense / n / 1e9)
        pl_module.log("val/flops/dense_padded_gflops", padded / n / 1e9)
        pl_module.log("val/flops/speedup", dense / max(skim, 1.0))
        pl_module.log("val/flops/speedup_vs_padded", padded / max(skim, 1.0))
