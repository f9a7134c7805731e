"""Sequence-classification metrics (GLUE conventions) as a :class:`torchmetrics.MetricCollection`.

Keys (the ``data.monitor`` of a task is ``val/<key>``):

========== ==================================================================================================
``acc``    accuracy: ``BinaryAccuracy`` for 2 classes, else micro-averaged ``MulticlassAccuracy`` (= accuracy)
``f1``     binary F1 of the positive class 1, as GLUE reports for MRPC and QQP (2 classes only)
``mcc``    Matthews correlation (CoLA): ``MatthewsCorrCoef``, binary or multiclass
``pearson`` / ``spearman``  correlation of predicted and gold scores (STS-B, regression: ``num_labels == 1``)
========== ==================================================================================================

Inputs: ``update(preds, target)`` with predicted class ids (``argmax`` of the logits, long) and gold ids for
classification, or predicted and gold float scores for regression.

**Scale.** The collection computes on torchmetrics' natural scale (accuracy in [0, 1], correlations in [-1, 1]);
:func:`scaled` multiplies every one of these metrics by 100 so logs, ``metrics.json`` and results rows read like
papers (``acc 91.3``, ``mcc 52.1``, ``pearson 88.4``). Apply it once, to computed results, before logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torchmetrics
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    MatthewsCorrCoef,
    MulticlassAccuracy,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from skim.errors import ConfigError

__all__ = ["METRIC_NAMES", "PERCENT_METRICS", "REGRESSION_METRICS", "build_metrics", "scaled"]

METRIC_NAMES: tuple[str, ...] = ("acc", "f1", "mcc", "pearson", "spearman")
REGRESSION_METRICS = frozenset({"pearson", "spearman"})
# metrics that :func:`scaled` reports x100
PERCENT_METRICS = frozenset(METRIC_NAMES)


def _build_one(name: str, num_labels: int) -> torchmetrics.Metric:
    regression = num_labels == 1
    if regression != (name in REGRESSION_METRICS):
        kind = "a regression task (num_labels 1)" if regression else f"a {num_labels}-class task"
        raise ConfigError(f"metric {name!r} does not apply to {kind}")
    if name == "acc":
        return BinaryAccuracy() if num_labels == 2 else MulticlassAccuracy(num_classes=num_labels, average="micro")
    if name == "f1":
        if num_labels != 2:
            raise ConfigError(
                f"metric 'f1' is the binary F1 of class 1 (GLUE MRPC/QQP); the task has {num_labels} classes"
            )
        return BinaryF1Score()
    if name == "mcc":
        if num_labels == 2:
            return MatthewsCorrCoef(task="binary")
        return MatthewsCorrCoef(task="multiclass", num_classes=num_labels)
    if name == "pearson":
        return PearsonCorrCoef()
    return SpearmanCorrCoef()


def build_metrics(names: Iterable[str], num_labels: int) -> torchmetrics.MetricCollection:
    """A MetricCollection with exactly the keys ``names`` (from :data:`METRIC_NAMES`).

    ``num_labels`` is the number of classes, or 1 for regression (then only ``pearson`` / ``spearman`` apply).
    Clone it per stage with a prefix: ``build_metrics(...).clone(prefix="val/")``.
    """
    names = list(names)
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown classification metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRIC_NAMES)}"
        )
    if num_labels < 1:
        raise ConfigError(f"num_labels must be >= 1 (1 = regression), got {num_labels}")
    # compute_groups=False: every metric keeps its own state (no surprises when some are reset or synced alone)
    return torchmetrics.MetricCollection({n: _build_one(n, num_labels) for n in names}, compute_groups=False)


def _base(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def scaled(results: Mapping[str, Any]) -> dict[str, Any]:
    """Results with every percentage-like metric (acc, f1, mcc, pearson, spearman) multiplied by 100.

    Keys may carry a prefix (``val/acc``); other entries (``val/loss``, counts) are returned unchanged. Tensors stay
    tensors, numbers stay numbers.
    """
    return {k: (v * 100 if _base(k) in PERCENT_METRICS else v) for k, v in results.items()}
