"""Extractive QA: skim encoder + span head, exact SQuAD evaluation that stays exact under DDP.

Evaluation: every rank keeps (feature index, start logits, end logits) padded to the data's max length with -100;
at epoch end they are all-gathered, de-duplicated by feature index (DistributedSampler pads with repeats), put in
feature order and post-processed once (n-best), so every example is scored exactly once whatever the world size.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skim.metrics.answers import answer_reached, answer_recall, answer_survival
from skim.metrics.counts import SumVector
from skim.metrics.qa_postprocess import QAEvaluationConfig, merge_feature_logits, postprocess_qa_predictions
from skim.metrics.squad import V2_SPLIT_METRICS, squad_v1_scores, squad_v2_scores
from skim.state import EncoderOutput
from skim.tasks.base_module import SkimTaskModule
from skim.utils.options import checked


class QAModule(SkimTaskModule):
    task = "qa"

    def __init__(self, *, evaluation: dict | None = None, **options: Any):
        """``evaluation``: SQuAD post-processing (n_best_size, max_answer_length, ...); ``options``: see
        :class:`SkimTaskModule`."""
        super().__init__(evaluation=evaluation, add_pooling_layer=False, **options)
        self.eval_cfg = checked(dict(evaluation or {}), QAEvaluationConfig, "evaluation")
        # gold-answer tokens that survive skimming (:func:`answer_survival`), summed over the validation epoch
        self.answer_stats = SumVector(self.encoder.num_layers + 4)
        self.qa_outputs = nn.Linear(self.encoder.hidden_size, 2)
        nn.init.normal_(self.qa_outputs.weight, std=0.02)
        nn.init.zeros_(self.qa_outputs.bias)
        self._eval_buffer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.init_from_checkpoint()

    def forward(self, batch: dict[str, torch.Tensor], mode: str | None = None):
        out = self.encode(batch, mode)
        logits = self.qa_outputs(out.last_hidden_state)
        start, end = logits.float().unbind(-1)
        fill = self.strategy.skimmed_logit
        if fill is not None:
            # tokens removed by the strategy can never be predicted as an answer (Block-Skim: -100)
            lost = None
            if self.training and not self.strategy.skimmed_answer_trains_backbone and "start_positions" in batch:
                lost = ~answer_reached(out.final_keep, *gold_positions(batch, start.shape[1]))
            start, end = exclude_skimmed(start, out, fill, lost), exclude_skimmed(end, out, fill, lost)
        return start, end, out

    def _losses(self, start, end, out, batch) -> dict[str, torch.Tensor]:
        sp, ep = gold_positions(batch, start.shape[1])
        qa = (F.cross_entropy(start, sp) + F.cross_entropy(end, ep)) / 2
        terms = {"qa_loss": qa, **self.strategy.aux_losses(out, batch)}
        terms["loss"] = sum(terms.values())
        return terms

    def training_step(self, batch, batch_idx):
        start, end, out = self(batch)
        terms = self._losses(start, end, out, batch)
        self.log_training_step(terms, out, batch)
        sp, ep = gold_positions(batch, start.shape[1])
        has = sp > 0
        if self.strategy.name != "none" and has.any():
            # answers the training-time decisions (Gumbel samples) left reachable: the others' span loss is large
            reached = answer_reached(out.final_keep, sp, ep)[has].float().mean()
            self.log("train/skim/answer_reachable", reached, batch_size=int(has.sum()))
        return terms["loss"]

    # ---- evaluation --------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._eval_buffer.clear()

    def validation_step(self, batch, batch_idx):
        with self.encoder.recording_alive():
            start, end, out = self(batch)
        bs = batch["input_ids"].shape[0]
        if "start_positions" in batch:
            terms = self._losses(start, end, out, batch)
            for k, v in terms.items():
                self.log(f"val/{k}", v, batch_size=bs, sync_dist=True)
            self.answer_stats.update(answer_survival(out, batch["start_positions"], batch["end_positions"]))
        skim_outputs = self.step_skim_outputs(out, batch)
        width = self._eval_width()
        pad = width - start.shape[1]
        if pad < 0:
            raise RuntimeError(f"batch is longer ({start.shape[1]}) than data.max_seq_length ({width})")
        self._eval_buffer.append(
            (batch["feature_index"].detach(), F.pad(start.detach(), (0, pad), value=-100.0), F.pad(end.detach(), (0, pad), value=-100.0))
        )
        return {"skim": skim_outputs}

    def _eval_width(self) -> int:
        return int(self.trainer.datamodule.max_seq_length)

    def _gather(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width = self._eval_width()
        if self._eval_buffer:
            idx = torch.cat([b[0] for b in self._eval_buffer])
            st = torch.cat([b[1] for b in self._eval_buffer])
            en = torch.cat([b[2] for b in self._eval_buffer])
        else:
            idx = torch.empty(0, dtype=torch.long, device=self.device)
            st = en = torch.empty(0, width, device=self.device)
        if self.trainer.world_size > 1:
            # ranks may hold different counts: pad to the largest with index -1, gather, drop the padding
            n = torch.tensor([idx.numel()], device=self.device)
            most = int(self.all_gather(n).max())
            extra = most - idx.numel()
            idx = torch.cat([idx, idx.new_full((extra,), -1)])
            st = torch.cat([st, st.new_full((extra, width), -100.0)])
            en = torch.cat([en, en.new_full((extra, width), -100.0)])
            idx, st, en = (self.all_gather(t).reshape(-1, *t.shape[1:]) for t in (idx, st, en))
        keep = idx >= 0
        return idx[keep].cpu().numpy(), st[keep].float().cpu().numpy(), en[keep].float().cpu().numpy()

    def on_validation_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        idx, st, en = self._gather()
        self._eval_buffer.clear()
        skim_stats = self.compute_skim_stats() | answer_recall(self.answer_stats.compute())
        self.answer_stats.reset()
        if self.trainer.sanity_checking:
            return
        examples, features = dm.eval_examples, dm.eval_features
        seen = np.unique(idx)
        if len(seen) < len(features):
            # a limited validation run (fast_dev_run, limit_val_batches): score only the examples whose
            # features were all seen, and say so; a full run always takes the exact path below
            examples, features, idx = _restrict_to_complete(examples, features, idx)
            st, en, idx = st[idx >= 0], en[idx >= 0], idx[idx >= 0]
        # every run says how many examples its scores cover (skim.report marks a partial evaluation)
        self.log("val/num_scored", float(len(examples)))
        if not examples:
            return
        start_logits, end_logits = merge_feature_logits(idx, st, en, len(features))
        v2 = bool(dm.version_2_with_negative)
        preds, _, null_odds = postprocess_qa_predictions(
            examples,
            features,
            start_logits,
            end_logits,
            version_2_with_negative=v2,
            n_best_size=self.eval_cfg["n_best_size"],
            max_answer_length=self.eval_cfg["max_answer_length"],
            null_score_diff_threshold=self.eval_cfg["null_score_diff_threshold"],
        )
        refs = {ex["id"]: list(ex["answers"]["text"]) for ex in examples}
        scores = squad_v2_scores(preds, refs) if v2 else squad_v1_scores(preds, refs)
        metrics = {"em": scores["exact_match"], "f1": scores["f1"]}
        if v2:
            for k in V2_SPLIT_METRICS:
                if k in scores:
                    metrics[k] = scores[k]
        # identical on every rank (same gathered inputs), so no further reduction is needed
        for k, v in metrics.items():
            self.log(f"val/{k}", float(v), prog_bar=k in ("em", "f1"), rank_zero_only=False)
        for k, v in skim_stats.items():
            self.log(f"val/skim/{k}", float(v))
        if self.eval_cfg["write_predictions"] and self.trainer.is_global_zero:
            self._write_predictions(preds, null_odds if v2 else None, dm)

    def _write_predictions(self, preds: dict, null_odds: dict | None, dm) -> None:
        out_dir = self.files_dir
        os.makedirs(out_dir, exist_ok=True)
        tmp = os.path.join(out_dir, "predictions.json.tmp")
        with open(tmp, "w") as f:
            json.dump(preds, f, indent=1, ensure_ascii=False)
        os.replace(tmp, os.path.join(out_dir, "predictions.json"))
        if null_odds is not None:
            with open(os.path.join(out_dir, "null_odds.json"), "w") as f:
                json.dump(null_odds, f)


def gold_positions(batch: dict[str, torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gold start/end token indices, clamped into the batch's ``length`` (HF's convention for spans beyond it)."""
    return batch["start_positions"].clamp(0, length - 1), batch["end_positions"].clamp(0, length - 1)


def _restrict_to_complete(examples: list[dict], features: list[dict], idx: np.ndarray):
    """Keep the examples all of whose features were evaluated; renumber their features densely."""
    seen = set(idx.tolist())
    by_example: dict[str, list[int]] = {}
    for i, f in enumerate(features):
        by_example.setdefault(f["example_id"], []).append(i)
    complete = {eid for eid, fs in by_example.items() if all(i in seen for i in fs)}
    kept_examples = [ex for ex in examples if ex["id"] in complete]
    old = [i for i, f in enumerate(features) if f["example_id"] in complete]
    remap = {o: n for n, o in enumerate(old)}
    new_idx = np.array([remap.get(int(i), -1) for i in idx], dtype=np.int64)
    return kept_examples, [features[o] for o in old], new_idx


def exclude_skimmed(logits: torch.Tensor, out: EncoderOutput, fill: float, lost: torch.Tensor | None = None) -> torch.Tensor:
    """Write ``fill`` at the positions that did not survive to the output; ``lost`` ([B] bool, training only): rows
    whose gold answer was skimmed, whose span loss then reaches the keep weights but not the backbone and span head.

    With straight-through keep weights w (mask-mode training) the forward value is the same, and ``w - w.detach()``
    (zero) gives every position, kept or skimmed, d logit / d w = 1: d loss / d w = p - y of the span softmax over the
    kept positions. A kept answer token pulls its w up by 1 - p, any other kept token pushes it down by p, and a
    skimmed answer token pulls by 1, which is what makes the predictor learn to keep answers (a log-weight mask would
    give skimmed positions no gradient at all, and the predictor then skims answers freely).
    """
    w = out.final_keep_weight
    kept = out.final_keep if w is None else w > 0
    if lost is not None:
        # with the answer at ``fill`` the loss only lowers the kept positions' logits, whatever they hold
        logits = torch.where(lost[:, None], logits.detach(), logits)
    masked = torch.where(kept, logits, torch.full_like(logits, fill))
    return masked if w is None else masked + (w - w.detach()).to(logits.dtype)
