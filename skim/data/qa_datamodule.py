"""Extractive-QA DataModule for SQuAD-format data (SQuAD v1.1 / v2.0, or the synthetic quickstart set).

Featurisation follows the HF question-answering recipe (``run_qa.py``): ``truncation="only_second"``, overflowing
windows with ``doc_stride`` overlap, offset mappings, feature->example ids, windows without the answer labelled at
[CLS]. Questions longer than ``max_query_length`` tokens are cut (the legacy SQuAD recipe). Every feature keeps its
labels (also at validation, for the validation loss and Block-Skim's block labels), ``protect_mask`` (real tokens
that are not context: [CLS], question, [SEP]) and its integer ``feature_index`` / ``example_index`` so that
evaluation can be gathered across ranks.

Tokenised features are cached as Arrow files keyed by a hash of the source file, the tokenizer and every
featurisation option, so a second run does not re-tokenise.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import datasets
import torch

from skim.data.base import SkimDataModule, local_config
from skim.data.squad_io import dataset_fingerprint_of_file, load_squad
from skim.data.tokenizer import build_tokenizer
from skim.errors import ConfigError

log = logging.getLogger(__name__)

FEATURISER_VERSION = "qa-v1"


def _truncate_questions(tokenizer, questions: list[str], max_query_length: int) -> list[str]:
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offs in zip(questions, enc["offset_mapping"]):
        out.append(q[: offs[max_query_length - 1][1]] if len(offs) > max_query_length else q)
    return out


def featurize(
    examples: dict[str, list],
    indices: list[int],
    *,
    tokenizer,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    pad_to_max_length: bool,
) -> dict[str, list]:
    pad_on_right = tokenizer.padding_side == "right"
    if not pad_on_right:
        raise ConfigError("tokenizers that pad on the left are not supported for extractive QA")
    questions = _truncate_questions(tokenizer, [q.lstrip() for q in examples["question"]], max_query_length)
    enc = tokenizer(
        questions,
        examples["context"],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    )
    sample_map = enc.pop("overflow_to_sample_mapping")
    out: dict[str, list] = {k: [] for k in ("start_positions", "end_positions", "protect_mask", "example_index", "offset_mapping")}
    for i, offsets in enumerate(enc["offset_mapping"]):
        ids = enc["input_ids"][i]
        cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        seq_ids = enc.sequence_ids(i)
        s = sample_map[i]
        answers = examples["answers"][s]
        start_pos = end_pos = cls_index
        if len(answers["answer_start"]) > 0:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            ts = 0
            while seq_ids[ts] != 1:
                ts += 1
            te = len(ids) - 1
            while seq_ids[te] != 1:
                te -= 1
            if offsets[ts][0] <= start_char and offsets[te][1] >= end_char:
                while ts < len(offsets) and seq_ids[ts] == 1 and offsets[ts][0] <= start_char:
                    ts += 1
                start_pos = ts - 1
                while seq_ids[te] == 1 and offsets[te][1] >= end_char:
                    te -= 1
                end_pos = te + 1
        mask = enc["attention_mask"][i]
        out["start_positions"].append(start_pos)
        out["end_positions"].append(end_pos)
        out["protect_mask"].append([int(m == 1 and sid != 1) for m, sid in zip(mask, seq_ids)])
        out["example_index"].append(indices[s])
        # non-context tokens get (-1, -1): post-processing rejects spans there
        out["offset_mapping"].append([list(o) if sid == 1 else [-1, -1] for o, sid in zip(offsets, seq_ids)])
    out["input_ids"] = enc["input_ids"]
    out["attention_mask"] = enc["attention_mask"]
    out["token_type_ids"] = enc.get("token_type_ids", [[0] * len(x) for x in enc["input_ids"]])
    return out


MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "protect_mask")


def qa_collate(features: list[dict[str, Any]], pad_token_id: int = 0, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Pad to the longest feature of the batch (dynamic padding) or to ``pad_to``."""
    width = pad_to or max(len(f["input_ids"]) for f in features)
    batch: dict[str, torch.Tensor] = {}
    for key in MODEL_COLUMNS:
        fill = pad_token_id if key == "input_ids" else 0
        rows = [list(f[key]) + [fill] * (width - len(f[key])) for f in features]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    for key in ("start_positions", "end_positions", "example_index", "feature_index"):
        batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
    return batch


class QADataModule(SkimDataModule):
    task = "qa"
    loader_columns = (*MODEL_COLUMNS, "start_positions", "end_positions", "example_index", "feature_index")

    def collate_fn(self, pad_to: int | None):
        return functools.partial(qa_collate, pad_token_id=self.tokenizer.pad_token_id or 0, pad_to=pad_to)

    def __init__(
        self,
        *,
        tokenizer: str,
        task: str = "qa",
        name: str = "squad",
        monitor: str = "val/f1",
        hub_name: str | None = "squad",
        hub_config: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        train_split: str = "train",
        validation_split: str = "validation",
        version_2_with_negative: bool = False,
        max_seq_length: int = 384,
        doc_stride: int = 128,
        max_query_length: int = 64,
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
        if task != "qa":
            raise ConfigError(f"QADataModule serves extractive QA (data.task=qa), got data.task={task!r}")
        self.check_padding(padding, group_by_length)
        if doc_stride >= max_seq_length:
            raise ConfigError(f"data.doc_stride ({doc_stride}) must be smaller than data.max_seq_length ({max_seq_length})")
        self.save_hyperparameters(logger=False)  # skim.train logs the whole config once (with choices, overrides)
        self.tokenizer_name = tokenizer
        self.version_2_with_negative = version_2_with_negative
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
        self.eval_examples: list[dict] = []
        self.eval_split_examples: int | None = None
        self.eval_features: list[dict] = []
        self.cache_hits: dict[str, bool] = {}

    # ---- plumbing ----------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def prepare_data(self) -> None:
        if self.synthetic:
            from skim.data.synthetic import write_synthetic_squad

            write_synthetic_squad(
                self.synthetic["dir"],
                train_size=self.synthetic.get("train_size", 4000),
                val_size=self.synthetic.get("val_size", 500),
                seed=self.synthetic.get("seed", 1234),
                n_facts=tuple(self.synthetic.get("n_facts", (1, 1))),
                train_short_fraction=self.synthetic.get("train_short_fraction", 0.0),
            )

    def _source_key(self, source: str | None, split: str, raw: datasets.Dataset) -> str:
        if source:
            p = Path(source)
            return dataset_fingerprint_of_file(p) if p.is_file() else raw._fingerprint
        return f"hub:{self.hparams.hub_name}:{self.hparams.hub_config}:{split}:{raw._fingerprint}"

    def _tokenizer_key(self) -> str:
        tok = self.tokenizer
        vocab = tok.get_vocab()
        digest = hashlib.sha1(json.dumps(sorted(vocab.items())[:: max(len(vocab) // 512, 1)]).encode()).hexdigest()[:10]
        return f"{type(tok).__name__}:{len(vocab)}:{digest}:{tok.do_lower_case if hasattr(tok, 'do_lower_case') else ''}"

    def _load_split(self, source: str | None, split: str, option: str, limit: int | None) -> tuple[datasets.Dataset, int]:
        """(the split's first ``limit`` examples, the split's size)."""
        hp = self.hparams
        raw = load_squad(
            source,
            hub_name=hp.hub_name,
            hub_config=hp.hub_config,
            split=split,
            # v1.1 scores every question against its gold answers: a question without one is refused here
            require_answers=not self.version_2_with_negative,
            source_option=option,
            local_config=local_config(hp.name),
        )
        # the slice is taken before tokenisation: a quick run on a few examples does not tokenise the whole file
        total = len(raw)
        if limit is not None:
            raw = raw.select(range(min(limit, total)))
        return raw, total

    def _featurize(self, raw: datasets.Dataset, source: str | None, split: str, limit: int | None) -> datasets.Dataset:
        hp = self.hparams
        key = hashlib.sha1(
            "|".join(
                map(
                    str,
                    (FEATURISER_VERSION, self._source_key(source, split, raw), self._tokenizer_key(), hp.max_seq_length,
                     hp.doc_stride, hp.max_query_length, self.padding, limit, len(raw)),
                )
            ).encode()
        ).hexdigest()[:16]
        cache_dir = Path(self.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "skim", "features"))
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{split.split('[')[0]}-{key}.arrow"
        if path.exists():
            self.cache_hits[split] = True
            return datasets.Dataset.from_file(str(path))
        self.cache_hits[split] = False
        tok = self.tokenizer
        tmp = path.with_suffix(f".tmp{os.getpid()}.arrow")
        feats = raw.map(
            featurize,
            batched=True,
            with_indices=True,
            remove_columns=raw.column_names,
            fn_kwargs={
                "tokenizer": tok,
                "max_seq_length": hp.max_seq_length,
                "doc_stride": hp.doc_stride,
                "max_query_length": hp.max_query_length,
                "pad_to_max_length": self.padding == "max_length",
            },
            cache_file_name=str(tmp),
            desc=f"tokenising {split}",
        )
        feats = feats.add_column("feature_index", list(range(len(feats))))
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
            train_raw, _ = self._load_split(hp.train_file, hp.train_split, "data.train_file", hp.max_train_samples)
        eval_raw = None
        if self.eval_dataset is None:
            eval_raw, self.eval_split_examples = self._load_split(
                hp.validation_file, hp.validation_split, "data.validation_file", hp.max_eval_samples
            )
        if train_raw is not None:
            self.train_features = self._featurize(train_raw, hp.train_file, hp.train_split, hp.max_train_samples)
        if eval_raw is not None:
            self.eval_dataset = self._featurize(eval_raw, hp.validation_file, hp.validation_split, hp.max_eval_samples)
            self.eval_examples = [
                {"id": r["id"], "context": r["context"], "answers": r["answers"]} for r in eval_raw.select_columns(["id", "context", "answers"])
            ]
            meta = self.eval_dataset.select_columns(["example_index", "offset_mapping"])
            ids = [ex["id"] for ex in self.eval_examples]
            self.eval_features = [
                {"example_id": ids[r["example_index"]], "offset_mapping": [o if o[0] >= 0 else None for o in r["offset_mapping"]]}
                for r in meta
            ]

    def describe(self) -> dict[str, Any]:
        """What a results row / run record needs to know about the data."""
        return {
            "data": self.hparams.name,
            "padding": self.padding,
            "group_by_length": self.group_by_length,
            "max_seq_length": self.max_seq_length,
            "doc_stride": self.hparams.doc_stride,
            "train_features": len(self.train_features) if self.train_features is not None else None,
            "eval_examples": len(self.eval_examples),
            # before data.max_eval_samples: an evaluation on fewer examples is partial (skim.report marks it)
            "eval_split_examples": self.eval_split_examples,
            "eval_features": len(self.eval_features),
        }
