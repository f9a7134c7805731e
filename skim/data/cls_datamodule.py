"""Sequence-classification DataModule (GLUE, IMDB, 20 Newsgroups, Yelp polarity).

``data.name`` picks the task's :class:`skim.data.cls_io.TaskSpec` (labels, metrics, columns). Each example is
tokenised once, as one text or a text pair, truncated ``longest_first`` to ``max_seq_length`` (no windows: a long
IMDB review keeps its first tokens). Every feature carries ``protect_mask`` (1 only at position 0, the [CLS] token,
which a skimming model must always keep: its vector is what the classifier reads) and its ``example_index`` (the
row of :attr:`ClassificationDataModule.eval_examples`), so predictions can be gathered across ranks.

``max_train_samples`` / ``max_eval_samples`` take a fixed pseudo-random subset (seed 0, file order kept), not the
first rows: the IMDB and 20 Newsgroups files are sorted by label, so their first rows hold a single class.

Tokenised features are cached as Arrow files keyed by a hash of the source (file path, size and mtime, or the Hub
dataset's fingerprint), the tokenizer and every featurisation option, so a second run does not re-tokenise
(``cache_hits`` records, per role ``"train"`` / ``"validation"``, whether the cache answered).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import datasets
import torch

from skim.data.base import SkimDataModule, local_config
from skim.data.cls_io import READER_VERSION, get_task, load_cls
from skim.data.squad_io import dataset_fingerprint_of_file
from skim.data.tokenizer import build_tokenizer
from skim.errors import ConfigError

log = logging.getLogger(__name__)

FEATURISER_VERSION = "cls-v1"
SUBSET_SEED = 0
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "protect_mask")


def featurize(
    examples: dict[str, list],
    indices: list[int],
    *,
    tokenizer,
    max_seq_length: int,
    pair: bool,
    pad_to_max_length: bool,
) -> dict[str, list]:
    """Tokenise a batch of ``text_a`` (and ``text_b`` for pair tasks) rows into model features."""
    enc = tokenizer(
        examples["text_a"],
        examples["text_b"] if pair else None,
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


def cls_collate(
    features: list[dict[str, Any]], pad_token_id: int = 0, pad_to: int | None = None, regression: bool = False
) -> dict[str, torch.Tensor]:
    """Pad to the longest feature of the batch (dynamic padding) or to ``pad_to``.

    ``labels`` is long (class ids) or float32 (regression scores); every other tensor is long.
    """
    width = pad_to or max(len(f["input_ids"]) for f in features)
    batch: dict[str, torch.Tensor] = {}
    for key in MODEL_COLUMNS:
        fill = pad_token_id if key == "input_ids" else 0
        rows = [list(f[key]) + [fill] * (width - len(f[key])) for f in features]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float32 if regression else torch.long)
    batch["example_index"] = torch.tensor([f["example_index"] for f in features], dtype=torch.long)
    return batch


def tokenizer_key(tok) -> str:
    """Identity of a tokenizer for cache keys: class, vocabulary sample and lower-casing."""
    vocab = tok.get_vocab()
    digest = hashlib.sha1(json.dumps(sorted(vocab.items())[:: max(len(vocab) // 512, 1)]).encode()).hexdigest()[:10]
    return f"{type(tok).__name__}:{len(vocab)}:{digest}:{tok.do_lower_case if hasattr(tok, 'do_lower_case') else ''}"


def subset(raw: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    """``limit`` rows picked pseudo-randomly (seed :data:`SUBSET_SEED`) in file order; all rows if ``limit`` is None."""
    if limit is None or limit >= len(raw):
        return raw
    if limit < 1:
        raise ConfigError(f"max_train_samples / max_eval_samples must be >= 1 or null, got {limit}")
    return raw.select(sorted(random.Random(SUBSET_SEED).sample(range(len(raw)), limit)))


class ClassificationDataModule(SkimDataModule):
    task = "cls"
    loader_columns = (*MODEL_COLUMNS, "labels", "example_index")

    def collate_fn(self, pad_to: int | None):
        return functools.partial(
            cls_collate, pad_token_id=self.tokenizer.pad_token_id or 0, pad_to=pad_to, regression=self.is_regression
        )

    def __init__(
        self,
        *,
        tokenizer: str,
        task: str = "cls",
        name: str,
        monitor: str | None = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        train_split: str = "train",
        validation_split: str = "validation",
        max_seq_length: int = 128,
        padding: str = "dynamic",
        group_by_length: bool = False,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        cache_dir: str | None = None,
        synthetic: dict | None = None,
    ):
        super().__init__()
        self.check_types(locals())
        if task != "cls":
            raise ConfigError(
                f"ClassificationDataModule serves sequence classification (data.task=cls), got data.task={task!r}"
            )
        self.spec = get_task(name)
        self.check_padding(padding, group_by_length)
        if max_seq_length < 8:
            raise ConfigError(f"data.max_seq_length must be at least 8, got {max_seq_length}")
        allowed = [f"val/{m}" for m in self.spec.metric_names] + ["val/loss"]
        monitor = monitor or self.spec.monitor
        if monitor not in allowed:
            raise ConfigError(f"data.monitor={monitor!r} is not a metric of task {name} (one of: {', '.join(allowed)})")
        self.save_hyperparameters(logger=False)  # skim.train logs the whole config once (with choices, overrides)
        self.name = name
        self.monitor = monitor
        self.tokenizer_name = tokenizer
        self.num_labels = self.spec.num_labels
        self.is_regression = self.spec.is_regression
        self.metric_names = list(self.spec.metric_names)
        self.label_names = list(self.spec.label_names)
        self.max_seq_length = max_seq_length
        self.padding = padding
        self.group_by_length = group_by_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.synthetic = dict(synthetic) if synthetic else None
        self._tokenizer = None
        self.train_features: datasets.Dataset | None = None
        self.eval_dataset: datasets.Dataset | None = None
        # the validation examples (text_a, text_b, label), indexed by the features' example_index
        self.eval_examples: datasets.Dataset | None = None
        self.eval_split_examples: int | None = None
        self.cache_hits: dict[str, bool] = {}

    # ---- plumbing ----------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            tok = build_tokenizer(self.tokenizer_name)
            limit = getattr(tok, "model_max_length", None)
            if isinstance(limit, int) and limit < 100_000 and self.max_seq_length > limit:
                raise ConfigError(
                    f"data.max_seq_length={self.max_seq_length} exceeds the tokenizer's model_max_length ({limit})"
                )
            self._tokenizer = tok
        return self._tokenizer

    def prepare_data(self) -> None:
        if self.synthetic:  # skim's generated sentiment set (offline quickstart)
            from skim.data.synthetic import write_synthetic_sentiment

            write_synthetic_sentiment(
                self.synthetic["dir"],
                train_size=self.synthetic.get("train_size", 2000),
                val_size=self.synthetic.get("val_size", 500),
                seed=self.synthetic.get("seed", 4321),
            )
        # otherwise nothing to do: local files are read in ``setup``; Hub data is fetched (and cached) there

    def _source_key(self, source: str | None, split: str, raw: datasets.Dataset) -> str:
        if source:
            p = Path(source)
            if p.is_file():
                return f"{dataset_fingerprint_of_file(p)}:{READER_VERSION}:{self.spec.name}"
            return raw._fingerprint
        return f"hub:{self.hparams.hub_name}:{self.hparams.hub_config}:{split}:{raw._fingerprint}"

    def _load_split(self, source: str | None, split: str, option: str) -> datasets.Dataset:
        hp = self.hparams
        return load_cls(
            source,
            spec=self.spec,
            split=split,
            hub_name=hp.hub_name,
            hub_config=hp.hub_config,
            source_option=option,
            local_config=local_config(self.name),
        )

    def _featurize(
        self, raw: datasets.Dataset, source: str | None, split: str, role: str, limit: int | None
    ) -> datasets.Dataset:
        key = hashlib.sha1(
            "|".join(
                map(
                    str,
                    (FEATURISER_VERSION, self._source_key(source, split, raw), tokenizer_key(self.tokenizer),
                     self.spec.name, self.spec.is_pair, self.max_seq_length, self.padding, limit, SUBSET_SEED,
                     len(raw)),
                )
            ).encode()
        ).hexdigest()[:16]
        cache_dir = Path(self.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "skim", "features"))
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{self.spec.name}-{role}-{key}.arrow"
        if path.exists():
            self.cache_hits[role] = True
            return datasets.Dataset.from_file(str(path))
        self.cache_hits[role] = False
        tmp = path.with_suffix(f".tmp{os.getpid()}.arrow")
        feats = subset(raw, limit).map(
            featurize,
            batched=True,
            with_indices=True,
            remove_columns=raw.column_names,
            fn_kwargs={
                "tokenizer": self.tokenizer,
                "max_seq_length": self.max_seq_length,
                "pair": self.spec.is_pair,
                "pad_to_max_length": self.padding == "max_length",
            },
            cache_file_name=str(tmp),
            desc=f"tokenising {self.spec.name} {role}",
        )
        feats = feats.flatten_indices(cache_file_name=str(tmp) + ".flat")
        os.replace(str(tmp) + ".flat", path)
        for leftover in cache_dir.glob(f"{path.stem}.tmp{os.getpid()}*"):
            leftover.unlink(missing_ok=True)
        return datasets.Dataset.from_file(str(path))

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        # both files are read and validated before any tokenisation, so a bad validation file fails in seconds
        train_raw = None
        if stage in (None, "fit") and self.train_features is None:
            train_raw = self._load_split(hp.train_file, hp.train_split, "data.train_file")
        eval_raw = None
        if self.eval_dataset is None:
            eval_raw = self._load_split(hp.validation_file, hp.validation_split, "data.validation_file")
        if train_raw is not None:
            self.train_features = self._featurize(train_raw, hp.train_file, hp.train_split, "train", hp.max_train_samples)
        if eval_raw is not None:
            self.eval_dataset = self._featurize(
                eval_raw, hp.validation_file, hp.validation_split, "validation", hp.max_eval_samples
            )
            self.eval_examples = subset(eval_raw, hp.max_eval_samples)
            self.eval_split_examples = len(eval_raw)

    def describe(self) -> dict[str, Any]:
        """What a results row / run record needs to know about the data."""
        return {
            "data": self.name,
            "padding": self.padding,
            "group_by_length": self.group_by_length,
            "max_seq_length": self.max_seq_length,
            "train_examples": len(self.train_features) if self.train_features is not None else None,
            "eval_examples": len(self.eval_examples) if self.eval_examples is not None else 0,
            # before data.max_eval_samples: an evaluation on fewer examples is partial (skim.report marks it)
            "eval_split_examples": self.eval_split_examples,
        }
