"""Sequence-classification DataModule (GLUE, IMDB, 20 Newsgroups, Yelp polarity, or any task a data config
describes: see :mod:`skim.data.cls_sources`).

Each example is tokenised once, as one text or a text pair, truncated ``longest_first`` to ``max_seq_length`` (no
windows: a long IMDB review keeps its first tokens). Every feature carries ``protect_mask`` (1 only at position 0,
the [CLS] token, which a skimming model must always keep: its vector is what the classifier reads) and its
``example_index`` (the row of ``eval_examples``), so predictions can be gathered across ranks.

``max_train_samples`` / ``max_eval_samples`` take a fixed pseudo-random subset (seed 0, file order kept), not the
first rows: the IMDB and 20 Newsgroups files are sorted by label, so their first rows hold a single class.
"""

from __future__ import annotations

from typing import Any

import datasets
import torch

from skim.data.base import SkimDataModule
from skim.data.cls_sources import load_cls
from skim.data.synthetic import write_synthetic_sentiment
from skim.errors import ConfigError
from skim.metrics.classification import build_metrics
from skim.utils.options import is_instance


def featurize(
    examples: dict[str, list],
    indices: list[int],
    *,
    tokenizer,
    max_seq_length: int,
    pair: bool,
    pad_to_max_length: bool,
) -> dict[str, list]:
    """Tokenise a batch of ``text`` (and ``text_pair`` for pair tasks) rows into model features."""
    enc = tokenizer(
        examples["text"],
        examples["text_pair"] if pair else None,
        truncation="longest_first",
        max_length=max_seq_length,
        padding="max_length" if pad_to_max_length else False,
    )
    ids = enc["input_ids"]
    return {
        "input_ids": ids,
        "attention_mask": enc["attention_mask"],
        "token_type_ids": enc.get("token_type_ids", [[0] * len(x) for x in ids]),
        # Transkimmer-style models always keep [CLS] (position 0): the classifier reads its vector
        "protect_mask": [[1] + [0] * (len(x) - 1) for x in ids],
        "labels": list(examples["label"]),
        "example_index": list(indices),
    }


class ClassificationDataModule(SkimDataModule):
    task = "cls"
    subset_seed = 0

    def __init__(
        self,
        *,
        columns: dict,
        label_names: list,
        label_range: list | None = None,
        table: dict | None = None,
        metrics: list | None = None,
        **options: Any,
    ):
        self.check_types(locals(), ClassificationDataModule)
        options.setdefault("task", "cls")
        super().__init__(**options)
        if self.max_seq_length < 8:
            raise ConfigError(f"data.max_seq_length must be at least 8, got {self.max_seq_length}")
        named = [c for c in columns.values() if c is not None]
        if not columns.get("text") or not columns.get("label") or len(set(named)) < len(named):
            raise ConfigError(f"data.columns must name distinct 'text' and 'label' columns, got {dict(columns)}")
        if len(label_names) == 1:
            raise ConfigError(f"data.label_names needs at least 2 classes (none: a regression task), got {list(label_names)}")
        low_high = list(label_range or [0, 0])
        if len(low_high) != 2 or not all(is_instance(x, float) for x in low_high) or low_high[0] > low_high[1]:
            raise ConfigError(f"data.label_range must be [min, max] with min <= max, got {list(label_range)}")
        own = (table or {}).get("label_values")
        if own is not None and not (isinstance(own, dict) and all(is_instance(v, int) and 0 <= v < len(label_names) for v in own.values())):
            raise ConfigError(f"data.table.label_values must map the files' labels to class ids 0..{len(label_names) - 1}, got {own!r}")
        self.columns, self.label_range, self.table = dict(columns), label_range, table
        self.label_names = list(label_names)
        self.is_regression = not self.label_names
        self.is_pair = columns.get("text_pair") is not None
        self.num_labels = 1 if self.is_regression else len(self.label_names)
        self.metric_names = list(metrics or (["pearson", "spearman"] if self.is_regression else ["acc"]))
        # a metric that does not fit the task fails here, not in validation
        build_metrics(self.metric_names, self.num_labels)
        self.check_monitor([f"val/{m}" for m in self.metric_names] + ["val/loss"])
        self.scalar_columns = {
            "labels": torch.float32 if self.is_regression else torch.long,
            "example_index": torch.long,
        }
        self.eval_examples: datasets.Dataset | None = None

    def load(self, source: str | None, split: str, option: str) -> datasets.Dataset:
        return load_cls(
            source, split=split, columns=self.columns, label_names=self.label_names,
            label_range=self.label_range, table=self.table, **self.source_options(option),
        )  # fmt: skip

    featurize = staticmethod(featurize)

    def featurize_options(self) -> dict[str, Any]:
        return super().featurize_options() | {"pair": self.is_pair}

    write_synthetic = staticmethod(write_synthetic_sentiment)
