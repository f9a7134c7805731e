"""Sequence classification (GLUE, IMDB, 20 Newsgroups, ...) and regression (STS-B) on the skim encoder.

The head reads the first token's output ([CLS], ``<s>``) as each architecture's own ``*ForSequenceClassification``
does: BERT and ALBERT through the backbone's pretrained pooler, then dropout and a linear classifier; RoBERTa
(``RobertaClassificationHead``: dropout, dense, tanh), DistilBERT (``pre_classifier``, ReLU) and ELECTRA (dropout,
dense, GELU) through a dense layer the head owns (``pre_classifier``), then dropout and the classifier. The encoder's
adapter says which (``cls_head_activation``). With Transkimmer, [CLS] is never skimmed, so it always runs through
every layer. Metrics are each dataset's official ones (the DataModule names them), summed across DDP ranks by
torchmetrics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from skim.tasks.base_module import SkimTaskModule


class ClassificationModule(SkimTaskModule):
    task = "cls"

    def __init__(
        self,
        *,
        num_labels: int | None = None,
        is_regression: bool | None = None,
        metric_names: list[str] | None = None,
        **options: Any,
    ):
        """The head's shape (from the data module: skim.train passes it); ``options``: see :class:`SkimTaskModule`."""
        super().__init__(add_pooling_layer=True, **options)
        self.num_labels = num_labels
        self.is_regression = is_regression
        self.metric_names = metric_names
        self.classifier: nn.Module | None = None
        self.pre_classifier: nn.Module | None = None
        self.val_metrics = None
        if num_labels is not None:
            self._build_head(num_labels, bool(is_regression), metric_names or ["acc"])

    def _build_head(self, num_labels: int, is_regression: bool, metric_names: list[str]) -> None:
        from skim.metrics.classification import build_metrics

        self.num_labels, self.is_regression, self.metric_names = num_labels, is_regression, list(metric_names)
        # keep the values in hparams so that load_from_checkpoint rebuilds the same head
        self.hparams.update(num_labels=num_labels, is_regression=is_regression, metric_names=list(metric_names))
        adapter = self.encoder.adapter
        hidden = self.encoder.hidden_size
        self.dropout = nn.Dropout(adapter.classifier_dropout())
        self.pre_classifier = None
        if adapter.cls_head_activation is not None:
            # the architecture's head owns its dense layer (RoBERTa's checkpoints have no trained pooler)
            self.pre_classifier = nn.Linear(hidden, hidden)
            self.head_activation = ACT2FN[adapter.cls_head_activation]
            nn.init.normal_(self.pre_classifier.weight, std=0.02)
            nn.init.zeros_(self.pre_classifier.bias)
        self.classifier = nn.Linear(hidden, 1 if is_regression else num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)
        self.val_metrics = build_metrics(self.metric_names, num_labels)

    def setup(self, stage: str) -> None:
        # the head's size comes from the data (number of labels) unless the checkpoint already fixed it
        if self.classifier is None:
            dm = self.trainer.datamodule
            self._build_head(dm.num_labels, dm.is_regression, dm.metric_names)
        if stage == "fit":
            self.init_from_checkpoint()

    def forward(self, batch: dict[str, torch.Tensor], mode: str | None = None):
        out = self.encode(batch, mode)
        first = out.last_hidden_state[:, 0]
        adapter = self.encoder.adapter
        if self.pre_classifier is None:
            pooled = adapter.pool(first) if getattr(self.encoder.backbone, "pooler", None) is not None else first
        else:
            x = self.dropout(first) if adapter.cls_dropout_before_dense else first
            pooled = self.head_activation(self.pre_classifier(x))
        logits = self.classifier(self.dropout(pooled)).float()
        return logits, out

    def _losses(self, logits, out, batch) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        if self.is_regression:
            task = F.mse_loss(logits.squeeze(-1), labels.float())
        else:
            task = F.cross_entropy(logits, labels)
        terms = {"task_loss": task, **self.strategy.aux_losses(out, batch)}
        terms["loss"] = sum(terms.values())
        return terms

    def training_step(self, batch, batch_idx):
        logits, out = self(batch)
        terms = self._losses(logits, out, batch)
        self.log_training_step(terms, out, batch)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        logits, out = self(batch)
        bs = batch["input_ids"].shape[0]
        terms = self._losses(logits, out, batch)
        for k, v in terms.items():
            self.log(f"val/{k}", v, batch_size=bs, sync_dist=True)
        preds = logits.squeeze(-1) if self.is_regression else logits.argmax(-1)
        self.val_metrics.update(preds, batch["labels"])
        # examples scored, summed over steps and ranks (skim.report marks a partial evaluation)
        self.log("val/num_scored", float(bs), reduce_fx="sum", sync_dist=True, batch_size=bs)
        return {"skim": self.step_skim_outputs(out, batch)}

    def on_validation_epoch_end(self) -> None:
        from skim.metrics.classification import scaled

        values = {k: float(v) for k, v in scaled(self.val_metrics.compute()).items()}
        self.val_metrics.reset()
        skim_stats = self.compute_skim_stats()
        if self.trainer.sanity_checking:
            return
        for k, v in values.items():
            self.log(f"val/{k}", v, prog_bar=True)
        for k, v in skim_stats.items():
            self.log(f"val/skim/{k}", v)
