"""Extractive-QA DataModule: SQuAD v1.1 / v2.0, HotpotQA, MRQA (``data.layout``, see :mod:`skim.data.qa_sources`),
or the synthetic quickstart set.

Featurisation follows the HF question-answering recipe (``run_qa.py``): ``truncation="only_second"``, overflowing
windows with ``doc_stride`` overlap, offset mappings, feature->example ids, windows without the answer labelled at
[CLS]. Questions longer than ``max_query_length`` tokens are cut (the legacy SQuAD recipe). Every feature keeps its
labels (also at validation, for the validation loss and Block-Skim's block labels), ``protect_mask`` (real tokens
that are not context: [CLS], question, [SEP]) and its integer ``feature_index`` / ``example_index`` so that
evaluation can be gathered across ranks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import datasets
import torch

from skim.data.base import SkimDataModule
from skim.data.qa_sources import LAYOUTS, load_qa
from skim.data.synthetic import write_synthetic_squad
from skim.errors import ConfigError
from skim.metrics.squad import V2_SPLIT_METRICS


def _truncate_questions(tokenizer, questions: list[str], max_query_length: int) -> tuple[list[str], int]:
    """The questions cut to ``max_query_length`` tokens, and the most tokens a cut question has."""
    offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cut = [q[: offs[max_query_length - 1][1]] if len(offs) > max_query_length else q for q, offs in zip(questions, offsets)]
    return cut, max((min(len(offs), max_query_length) for offs in offsets), default=0)


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
    questions, longest = _truncate_questions(tokenizer, [q.lstrip() for q in examples["question"]], max_query_length)
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    room = max_seq_length - longest - specials
    if doc_stride >= room:  # the tokenizer would stop the run with a Rust panic at the first context that overflows
        raise ConfigError(
            f"data.doc_stride={doc_stride} must be smaller than the context tokens of a window: {room} = "
            f"data.max_seq_length={max_seq_length} - a question of {longest} tokens (data.max_query_length="
            f"{max_query_length}) - {specials} special tokens; lower data.doc_stride or data.max_query_length"
        )
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
    out: dict[str, list] = {
        k: [] for k in ("start_positions", "end_positions", "protect_mask", "example_index", "offset_mapping")
    }
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
            ts, te = seq_ids.index(1), len(seq_ids) - 1 - seq_ids[::-1].index(1)  # the context's first and last token
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


class QADataModule(SkimDataModule):
    task = "qa"
    scalar_columns: ClassVar[dict[str, torch.dtype]] = dict.fromkeys(
        ("start_positions", "end_positions", "example_index", "feature_index"), torch.long
    )

    def __init__(
        self,
        *,
        layout: str = "squad",
        version_2_with_negative: bool = False,
        doc_stride: int = 128,
        max_query_length: int = 64,
        yes_no: str | None = None,
        subset: str | None = None,
        **options: Any,
    ):
        self.check_types(locals(), QADataModule)
        options.setdefault("task", "qa")
        super().__init__(**{"monitor": "val/f1", "name": "squad", "max_seq_length": 384, **options})
        if doc_stride >= self.max_seq_length:
            raise ConfigError(
                f"data.doc_stride ({doc_stride}) must be smaller than data.max_seq_length ({self.max_seq_length})"
            )
        if layout not in LAYOUTS:
            raise ConfigError(f"data.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        for option, value, owner in (("yes_no", yes_no, "hotpotqa"), ("subset", subset, "mrqa")):
            if value is not None and layout != owner:  # it would be ignored without a word
                raise ConfigError(f"data.{option}={value!r} is read only with data.layout={owner}, not with data.layout={layout}")
        if yes_no not in (None, "drop", "prepend"):
            raise ConfigError(f"data.yes_no must be 'drop' or 'prepend', got {yes_no!r}")
        self.layout, self.version_2_with_negative = layout, version_2_with_negative
        v2 = [f"val/{k}" for k in V2_SPLIT_METRICS] if version_2_with_negative else []
        self.check_monitor(["val/f1", "val/em", "val/loss", *v2])
        self.doc_stride, self.max_query_length = doc_stride, max_query_length
        # HotpotQA: what happens to yes/no answers; MRQA: which of its data sets the Hub rows are filtered to (each set
        # only for its own layout, checked above; unset: the adapter's default)
        self.layout_options = {k: v for k, v in (("yes_no", yes_no), ("subset", subset)) if v is not None}
        self.eval_examples: list[dict] = []
        self.eval_features: list[dict] = []

    def load(self, source: str | None, split: str, option: str) -> datasets.Dataset:
        return load_qa(
            source, layout=self.layout, split=split, layout_options=self.layout_options,
            # v1.1 scores every question against its gold answers: a question without one is refused here
            require_answers=not self.version_2_with_negative, **self.source_options(option),
        )  # fmt: skip

    featurize = staticmethod(featurize)

    def featurize_options(self) -> dict[str, Any]:
        return super().featurize_options() | {"doc_stride": self.doc_stride, "max_query_length": self.max_query_length}

    def keep_eval_examples(self, examples: datasets.Dataset) -> None:
        self.eval_examples = [dict(r) for r in examples.select_columns(["id", "context", "answers"])]
        ids = [ex["id"] for ex in self.eval_examples]
        self.eval_features = [
            {
                "example_id": ids[r["example_index"]],
                "offset_mapping": [o if o[0] >= 0 else None for o in r["offset_mapping"]],
            }
            for r in self.eval_dataset.select_columns(["example_index", "offset_mapping"])
        ]

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        # a v2 split metric is logged only if the evaluation holds such questions; without them the checkpoint callback
        # would stop the run after its first epoch
        answerable = V2_SPLIT_METRICS.get(self.monitor.removeprefix("val/"))
        kinds = {bool(ex["answers"]["text"]) for ex in self.eval_examples} if answerable is not None else set()
        if stage in (None, "fit") and answerable is not None and answerable not in kinds:
            raise ConfigError(f"data.monitor={self.monitor!r}: none of the {len(self.eval_examples)} evaluation questions "
                              f"is {'answerable' if answerable else 'unanswerable'}; monitor val/f1")  # fmt: skip

    write_synthetic = staticmethod(write_synthetic_squad)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"doc_stride": self.doc_stride}
