"""Sequence-classification sources (GLUE TSV, IMDB / 20 Newsgroups JSONL, CSV, parquet, the Hub), as one schema::

    text (str), text_pair (str: "" for single-text tasks), label (ClassLabel id, or float32 for regression)

Everything task-specific comes from the data config, so a new task in an existing layout is one YAML:
``columns`` names the text / pair / label columns of the Hub dataset and of JSONL files; ``table`` the columns of the
task's TSV/CSV files where they differ (``names`` for files without a header line, like GLUE's CoLA);
``table.label_values`` the files' own label values where they are not the ids or names (Yelp's "1"/"2");
``label_names`` are the class names in id order (empty: regression in ``label_range``). Labels are converted and checked by a
batched ``map``: the first unknown label stops loading with one line naming the file and the row.
"""

from __future__ import annotations

import csv
import logging
import math
from typing import Any

import datasets

from skim.data.sources import BadRow, load_rows, quiet, take_split
from skim.errors import DataError, one_line

log = logging.getLogger(__name__)

CLS_COLUMNS = ("text", "text_pair", "label")


def cls_features(label_names: list[str]) -> datasets.Features:
    label = datasets.ClassLabel(names=list(label_names)) if label_names else datasets.Value("float32")
    return datasets.Features({"text": datasets.Value("string"), "text_pair": datasets.Value("string"), "label": label})


def _file_kwargs(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # GLUE TSVs hold stray quote characters: no quoting; empty cells stay "" (not NaN); a row with more fields than
    # the header is an error (index_col=False: pandas would otherwise take the extra field as the row's index)
    headed = {"header": None, "names": list(table["names"])} if table.get("names") else {}
    tsv = {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False, "index_col": False, **headed}
    return {".tsv": tsv, ".csv": {**tsv, "sep": ",", "quoting": csv.QUOTE_MINIMAL}}


def _label_id(value: Any, label_names: list[str], label_values: dict[str, int] | None) -> int | None:
    """The class id of a raw label (the files' own values if the task has them, else an id or a class name)."""
    if isinstance(value, bool):
        return None
    key = str(value).strip()
    if label_values is not None:
        return label_values.get(key)
    if key.isdecimal() and int(key) < len(label_names):
        return int(key)
    return label_names.index(key) if key in label_names else None


def _convert(
    batch: dict[str, list],
    *,
    label_names: list[str],
    label_values,
    label_range,
    pair: bool,
) -> dict[str, list]:
    labels = []
    for row, value, text, text_pair in zip(batch["_row"], batch["label"], batch["text"], batch["text_pair"]):
        for name, t in (("text", text), ("text_pair", text_pair)):
            if not isinstance(t, str) and (pair or name == "text"):
                raise BadRow(row, f"the {name.replace('_', ' ')} must be a string, got {t!r}")
        if not label_names:  # regression
            try:
                score = float(value)
            except (TypeError, ValueError):
                raise BadRow(row, f"score {value!r} is not a number (a regression task)") from None
            if not math.isfinite(score) or (label_range and not label_range[0] <= score <= label_range[1]):
                raise BadRow(row, f"score {score:g} is not a finite number in {list(label_range or [])}")
            labels.append(score)
            continue
        label = _label_id(value, label_names, label_values)
        if label is None:
            hint = " (an unlabelled test split? use a labelled split)" if value == -1 else ""
            allowed = (
                list(label_values) if label_values is not None else [*map(str, range(len(label_names))), *label_names]
            )
            raise BadRow(row, f"unknown label {value!r} (allowed: {', '.join(map(repr, allowed))}){hint}")
        labels.append(label)
    return {"label": labels, "text_pair": [t if pair else "" for t in batch["text_pair"]]}


def load_cls(
    source: str | None,
    *,
    split: str,
    columns: dict[str, str | None],
    label_names: list[str],
    label_range: list[float] | None = None,
    table: dict[str, Any] | None = None,
    **load: Any,
) -> datasets.Dataset:
    """One split of classification data in :func:`cls_features`, labels converted and checked."""
    table = table or {}
    src = load_rows(source, split=split, file_kwargs=_file_kwargs(table), **load)
    with src.checking():
        rows = take_split(src.parts, split, src.where)
        in_table = src.suffix in (".tsv", ".csv")
        names = {**columns, **(table.get("columns") or {})} if in_table else dict(columns)
        pair = names.get("text_pair") is not None
        wanted = {names[k]: k for k in CLS_COLUMNS if names.get(k) is not None}
        missing = [c for c in wanted if c not in rows.column_names]
        if missing:
            raise DataError(f"{src.where}: missing column(s) {', '.join(map(repr, missing))} for data.columns "
                            f"{dict(columns)} (found: {', '.join(c for c in rows.column_names if c != '_row')})")  # fmt: skip
        rows = rows.select_columns([*wanted, "_row"]).rename_columns({k: v for k, v in wanted.items() if k != v})
        label = rows.features["label"]
        if isinstance(label, datasets.ClassLabel) and label_names and label.num_classes != len(label_names):
            raise DataError(f"{src.where}: the labels have {label.num_classes} classes ({', '.join(label.names)}), "
                            f"data.label_names {len(label_names)}")  # fmt: skip
        if not pair:
            rows = rows.add_column("text_pair", [""] * len(rows))
        if in_table and table.get("skip_incomplete_rows"):
            complete = rows.filter(lambda b: [str(v).strip() != "" for v in b["label"]], batched=True)
            if len(complete) < len(rows):
                log.warning("%s: skipped %d row(s) with too few fields", src.where, len(rows) - len(complete))
            rows = complete
        own = {str(k): int(v) for k, v in table["label_values"].items()} if in_table and table.get("label_values") else None
        try:
            with quiet():
                return rows.map(
                    _convert, batched=True, features=cls_features(label_names), remove_columns=["_row"],
                    fn_kwargs={"label_names": list(label_names), "label_values": own, "label_range": label_range, "pair": pair},
                )  # fmt: skip
        except (TypeError, ValueError) as err:
            raise DataError(f"{src.where}: columns do not have the types of this task: {one_line(err)}") from err
