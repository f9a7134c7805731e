"""Sequence classification (GLUE, IMDB, 20 Newsgroups, ...) and regression (STS-B) on the skim encoder.

The head reads the [CLS] output (through the backbone's pooler, as ``BertForSequenceClassification``); with
Transkimmer, [CLS] is never skimmed, so it always runs through every layer. Metrics are each dataset's official
ones (the DataModule names them), summed across DDP ranks by torchmetrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skim.models.base_module import SkimTaskModule


class ClassificationModule(SkimTaskModule):
    task = "cls"

    def __init__(
        self,
        model: dict,
        skim: dict | None = None,
        optim: dict | None = None,
        evaluation: dict | None = None,
        output_dir: str | None = None,
        num_labels: int | None = None,
        is_regression: bool | None = None,
        metric_names: list[str] | None = None,
    ):
        super().__init__(model=model, skim=skim, optim=optim, add_pooling_layer=True)
        self.save_hyperparameters(logger=False)  # skim.train logs the whole config once (with choices, overrides)
        self.output_dir = output_dir
        self.num_labels = num_labels
        self.is_regression = is_regression
        self.metric_names = metric_names
        self.classifier: nn.Module | None = None
        self.val_metrics = None
        if num_labels is not None:
            self._build_head(num_labels, bool(is_regression), metric_names or ["acc"])

    def _build_head(self, num_labels: int, is_regression: bool, metric_names: list[str]) -> None:
        from skim.metrics.classification import build_metrics

        self.num_labels, self.is_regression, self.metric_names = num_labels, is_regression, list(metric_names)
        # keep the values in hparams so that load_from_checkpoint rebuilds the same head
        self.hparams.update(num_labels=num_labels, is_regression=is_regression, metric_names=list(metric_names))
        config = self.encoder.backbone.config
        self.dropout = nn.Dropout(getattr(config, "classifier_dropout", None) or config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1 if is_regression else num_labels)
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
        cls = out.last_hidden_state[:, 0]
        pooler = self.encoder.backbone.pooler
        pooled = pooler.activation(pooler.dense(cls)) if pooler is not None else cls
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
