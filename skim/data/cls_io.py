"""Loading sequence-classification data (GLUE, IMDB, 20 Newsgroups, Yelp) into a flat :class:`datasets.Dataset`.

Every loader returns the same layout, whatever the task or source::

    text_a (str), text_b (str: "" for single-sentence tasks), label (ClassLabel id, or float32 for regression)

Whether a task has a second text is a property of the task (``spec.text_b is None``: single sentence), not of the
rows, and is recorded in the dataset's ``info.description`` (JSON ``{"task": ..., "pair": ...}``).

Each task is described by a :class:`TaskSpec` in :data:`TASKS`: the column names of its GLUE TSV files, of JSONL
files and of its Hugging Face Hub dataset, its labels, metrics and Hub splits. **Label ids follow the Hub datasets**
(``glue/*``, ``imdb``, ``SetFit/20_newsgroups``, ``yelp_polarity``), so local files and Hub data give the same ids
and a model trained on one evaluates on the other:

==========  ======================================================================
task        ids
==========  ======================================================================
cola        0 unacceptable, 1 acceptable
sst2        0 negative, 1 positive
mrpc        0 not_equivalent, 1 equivalent
qqp         0 not_duplicate, 1 duplicate
rte, qnli   0 entailment, 1 not_entailment
wnli        0 not_entailment, 1 entailment
mnli        0 entailment, 1 neutral, 2 contradiction
stsb        regression: a float similarity score in [0, 5]
imdb        0 neg, 1 pos
20news      0..19: the 20 group names in alphabetical order (scikit-learn's ``target_names``)
yelp        0 negative (file label "1"), 1 positive (file label "2")
==========  ======================================================================

A label cell/field may hold the id (``1``, ``"1"``) or the label name (``"not_entailment"``); anything else is an
error naming the line and the allowed values. Yelp's CSV files use their own values ("1"/"2", see :data:`TASKS`).

Supported files: ``.tsv`` / ``.tsv.gz`` (the original GLUE layout of the task: header or not, which columns; for
tasks without a GLUE layout a header naming the JSONL fields), ``.csv`` / ``.csv.gz`` (the original Yelp polarity
CSV; other tasks: a header naming the JSONL fields), ``.jsonl`` / ``.jsonl.gz`` (one object per line, fields named
like the task's Hub columns, e.g. ``{"sentence": ..., "label": 1}`` for SST-2, ``{"text": ..., "label": 0}`` for
IMDB). GLUE TSVs are read with ``csv.QUOTE_NONE``: their sentences contain stray quote characters.

Every problem becomes a :class:`skim.errors.DataError` whose single-line message names the file and the line
(and column) at fault.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from skim.data.squad_io import _decode, _one_line, _read_bytes, dataset_fingerprint_of_file
from skim.errors import ConfigError, DataError

__all__ = [
    "CLS_COLUMNS",
    "SUPPORTED_SUFFIXES",
    "TASKS",
    "TableLayout",
    "TaskSpec",
    "features_for",
    "get_task",
    "load_cls",
    "normalise_hub_cls",
    "read_cls_file",
]

CLS_COLUMNS: tuple[str, ...] = ("text_a", "text_b", "label")

# Longest suffixes first so ".jsonl.gz" is not mistaken for ".gz".
SUPPORTED_SUFFIXES: tuple[str, ...] = (".jsonl.gz", ".tsv.gz", ".csv.gz", ".jsonl", ".tsv", ".csv")

# Bump when parsing / normalisation changes, so fingerprint-keyed caches are invalidated.
READER_VERSION = "cls_io-1"

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- task specs


@dataclass(frozen=True)
class TableLayout:
    """Where a task's fields are in a delimited file (.tsv / .csv).

    ``text_a`` / ``text_b`` / ``label`` are header names when ``header`` is true, else 0-based field indices.
    ``label_values`` maps the raw label cell to the class id; ``None`` accepts the ids ("0", "1", ...) and the
    label names of the task.
    """

    text_a: str | int
    text_b: str | int | None
    label: str | int
    header: bool = True
    delimiter: str = "\t"
    quoting: int = csv.QUOTE_NONE
    label_values: tuple[tuple[str, int], ...] | None = None
    # Tolerate (and count) rows with too few fields instead of failing: only for files known to hold a few
    # broken lines (QQP's train.tsv; the HF/GLUE reference readers skip them too).
    skip_short_rows: bool = False
    # Shown when a headerless file fails on its first line (it probably has a header after all).
    note: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """Everything skim knows about one classification task.

    ``text_a`` / ``text_b`` / ``label`` name the JSONL fields, which are also the Hub dataset's columns;
    ``tsv`` / ``csv`` describe the task's delimited files (``None``: a header naming the JSONL fields).
    ``label_names`` are in id order (the Hub's order, see the module docstring); empty for regression.
    ``metric_names`` are keys of :func:`skim.metrics.classification.build_metrics`; ``main_metric`` is the one
    checkpoints and sweeps follow (``monitor`` = ``val/<main_metric>``, the GLUE convention).
    """

    name: str
    text_a: str
    text_b: str | None
    label: str = "label"
    label_names: tuple[str, ...] = ()
    is_regression: bool = False
    label_range: tuple[float, float] | None = None
    metric_names: tuple[str, ...] = ("acc",)
    main_metric: str = "acc"
    tsv: TableLayout | None = None
    csv: TableLayout | None = None
    hub_name: str | None = None
    hub_config: str | None = None
    hub_train_split: str = "train"
    hub_validation_split: str = "validation"
    max_seq_length: int = 128
    description: str = field(default="", compare=False)

    @property
    def num_labels(self) -> int:
        """Number of model outputs: 1 for regression, else the number of classes."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.text_b is not None

    @property
    def monitor(self) -> str:
        return f"val/{self.main_metric}"

    def label_lookup(self, layout: TableLayout | None = None) -> dict[str, int]:
        """Raw label value (string) -> class id: the layout's own values, else the ids and the label names."""
        if layout is not None and layout.label_values is not None:
            return dict(layout.label_values)
        lookup = {str(i): i for i in range(len(self.label_names))}
        lookup.update({n: i for i, n in enumerate(self.label_names)})
        return lookup

    def table_layout(self, kind: str) -> TableLayout:
        """Layout of a ``.tsv`` (kind "tsv") or ``.csv`` (kind "csv") file of this task."""
        own = self.tsv if kind == "tsv" else self.csv
        if own is not None:
            return own
        return TableLayout(
            text_a=self.text_a,
            text_b=self.text_b,
            label=self.label,
            header=True,
            delimiter="\t" if kind == "tsv" else ",",
            quoting=csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL,
        )


def _glue(config: str, **kw: Any) -> dict[str, Any]:
    return {"hub_name": "glue", "hub_config": config, **kw}


_BINARY01 = (("0", 0), ("1", 1))
NEWSGROUPS = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware",
    "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles", "rec.sport.baseball", "rec.sport.hockey",
    "sci.crypt", "sci.electronics", "sci.med", "sci.space", "soc.religion.christian", "talk.politics.guns",
    "talk.politics.mideast", "talk.politics.misc", "talk.religion.misc",
)  # fmt: skip

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="cola", text_a="sentence", text_b=None, label_names=("unacceptable", "acceptable"),
            metric_names=("mcc",), main_metric="mcc",
            # GLUE's CoLA train/dev: no header; source, label, original label, sentence
            tsv=TableLayout(text_a=3, text_b=None, label=1, header=False, label_values=_BINARY01,
                            note="CoLA's GLUE files have no header line"),
            **_glue("cola"), description="grammatical acceptability (Warstadt et al. 2019)",
        ),
        TaskSpec(
            name="sst2", text_a="sentence", text_b=None, label_names=("negative", "positive"),
            tsv=TableLayout(text_a="sentence", text_b=None, label="label", label_values=_BINARY01),
            **_glue("sst2"), description="binary sentiment of movie-review sentences",
        ),
        TaskSpec(
            name="mrpc", text_a="sentence1", text_b="sentence2", label_names=("not_equivalent", "equivalent"),
            metric_names=("acc", "f1"), main_metric="f1",
            tsv=TableLayout(text_a="#1 String", text_b="#2 String", label="Quality", label_values=_BINARY01),
            **_glue("mrpc"), description="paraphrase (Microsoft Research Paraphrase Corpus)",
        ),
        TaskSpec(
            name="qqp", text_a="question1", text_b="question2", label_names=("not_duplicate", "duplicate"),
            metric_names=("acc", "f1"), main_metric="f1",
            tsv=TableLayout(text_a="question1", text_b="question2", label="is_duplicate", label_values=_BINARY01,
                            skip_short_rows=True),
            **_glue("qqp"), description="duplicate Quora questions",
        ),
        TaskSpec(
            name="stsb", text_a="sentence1", text_b="sentence2", is_regression=True, label_range=(0.0, 5.0),
            metric_names=("pearson", "spearman"), main_metric="pearson",
            tsv=TableLayout(text_a="sentence1", text_b="sentence2", label="score"),
            **_glue("stsb"), description="semantic similarity score 0-5 (regression)",
        ),
        TaskSpec(
            name="rte", text_a="sentence1", text_b="sentence2", label_names=("entailment", "not_entailment"),
            tsv=TableLayout(text_a="sentence1", text_b="sentence2", label="label"),
            **_glue("rte"), description="recognising textual entailment",
        ),
        TaskSpec(
            name="wnli", text_a="sentence1", text_b="sentence2", label_names=("not_entailment", "entailment"),
            tsv=TableLayout(text_a="sentence1", text_b="sentence2", label="label"),
            **_glue("wnli"), description="Winograd NLI",
        ),
        TaskSpec(
            name="qnli", text_a="question", text_b="sentence", label_names=("entailment", "not_entailment"),
            tsv=TableLayout(text_a="question", text_b="sentence", label="label"),
            **_glue("qnli"), description="question-answering NLI (from SQuAD)",
        ),
        TaskSpec(
            name="mnli", text_a="premise", text_b="hypothesis", label_names=("entailment", "neutral", "contradiction"),
            tsv=TableLayout(text_a="sentence1", text_b="sentence2", label="gold_label"),
            **_glue("mnli", hub_validation_split="validation_matched"), description="multi-genre NLI (matched dev)",
        ),
        TaskSpec(
            name="imdb", text_a="text", text_b=None, label_names=("neg", "pos"),
            hub_name="imdb", hub_validation_split="test", max_seq_length=512,
            description="binary sentiment of full IMDB reviews (Maas et al. 2011)",
        ),
        TaskSpec(
            name="20news", text_a="text", text_b=None, label_names=NEWSGROUPS,
            hub_name="SetFit/20_newsgroups", hub_validation_split="test", max_seq_length=512,
            description="20 Newsgroups topic classification (bydate split)",
        ),
        TaskSpec(
            name="synthetic_sentiment", text_a="text", text_b=None, label_names=("negative", "positive"),
            hub_name=None, max_seq_length=256,
            description="skim's generated sentiment set: one opinion sentence among filler sentences (skim.data.synthetic)",
        ),
        TaskSpec(
            name="yelp", text_a="text", text_b=None, label_names=("negative", "positive"),
            # the original yelp_review_polarity_csv: no header, "label","text" with label 1 (neg) / 2 (pos)
            csv=TableLayout(text_a=1, text_b=None, label=0, header=False, delimiter=",", quoting=csv.QUOTE_MINIMAL,
                            label_values=(("1", 0), ("2", 1)),
                            note='Yelp polarity CSVs have no header: "label","text" with label 1 or 2'),
            hub_name="yelp_polarity", hub_validation_split="test", max_seq_length=512,
            description="Yelp review polarity (Zhang et al. 2015)",
        ),
    )
}  # fmt: skip


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``name`` (ConfigError listing the known tasks otherwise)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown classification task data.name={name!r}; known: {', '.join(TASKS)}") from None


def features_for(spec: TaskSpec) -> datasets.Features:
    label = datasets.Value("float32") if spec.is_regression else datasets.ClassLabel(names=list(spec.label_names))
    return datasets.Features({"text_a": datasets.Value("string"), "text_b": datasets.Value("string"), "label": label})


# --------------------------------------------------------------------------- helpers


def _short(value: object, limit: int = 40) -> str:
    if not isinstance(value, str):
        s = json.dumps(value)
        return s if len(s) <= limit else s[:limit] + "..."
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    return {str: "string", bool: "boolean", int: "integer", float: "number", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _suffix_of(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if name.endswith(s)), None)


def _read_text(path: Path, gz: bool) -> str:
    # the same reading rules (gzip checks, UTF-8 with optional BOM) as the SQuAD reader
    return _decode(path, _read_bytes(path, gz))


class _Rows:
    """Column-wise accumulator with the label conversion and checks shared by every file type."""

    def __init__(self, path: Path, spec: TaskSpec, lookup: dict[str, int]) -> None:
        self.path, self.spec, self.lookup = path, spec, lookup
        self.text_a: list[str] = []
        self.text_b: list[str] = []
        self.label: list[int | float] = []

    def allowed(self) -> str:
        return ", ".join(repr(k) for k in self.lookup)

    def class_id(self, value: object, loc: str, column: str) -> int | float:
        spec, path = self.spec, self.path
        if spec.is_regression:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise DataError(f"{path}: {loc}: the score in {column} must be a number, got {_json_type_name(value)}")
            try:
                score = float(value)
            except ValueError:
                raise DataError(
                    f"{path}: {loc}: score {_short(value)} in {column} is not a number "
                    f"(task {spec.name} is a regression task)"
                ) from None
            if not math.isfinite(score):
                raise DataError(f"{path}: {loc}: score {_short(value)} in {column} is not a finite number")
            if spec.label_range and not spec.label_range[0] <= score <= spec.label_range[1]:
                lo, hi = spec.label_range
                raise DataError(
                    f"{path}: {loc}: score {score:g} in {column} is outside [{lo:g}, {hi:g}] for task {spec.name}"
                )
            return score
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value < spec.num_labels:
                return value
        elif isinstance(value, str) and value in self.lookup:
            return self.lookup[value]
        elif not isinstance(value, str):
            raise DataError(
                f"{path}: {loc}: {column} must be an integer id or a label name, got {_json_type_name(value)}"
            )
        raise DataError(
            f"{path}: {loc}: unknown label {_short(value)} in {column} for task {spec.name} "
            f"(allowed: {self.allowed()}{'' if isinstance(value, str) else f' or ids 0..{spec.num_labels - 1}'})"
        )

    def add(self, a: str, b: str, label: float) -> None:
        self.text_a.append(a)
        self.text_b.append(b)
        self.label.append(label)

    def to_dataset(self, split: str | None, empty_reason: str) -> datasets.Dataset:
        if not self.label:
            raise DataError(f"{self.path}: no examples ({empty_reason})")
        import pyarrow as pa

        feats = features_for(self.spec)
        table = pa.Table.from_pydict(
            {"text_a": self.text_a, "text_b": self.text_b, "label": self.label}, schema=feats.arrow_schema
        )
        fingerprint = hashlib.sha256(
            f"{dataset_fingerprint_of_file(self.path)}|{READER_VERSION}|{self.spec.name}".encode()
        ).hexdigest()[:16]
        return datasets.Dataset(
            table,
            info=datasets.DatasetInfo(features=feats, description=_describe(self.spec)),
            split=datasets.NamedSplit(split) if split else None,
            fingerprint=fingerprint,
        )


def _describe(spec: TaskSpec) -> str:
    return json.dumps({"task": spec.name, "pair": spec.is_pair})


# --------------------------------------------------------------------------- file formats


def _parse_table(path: Path, text: str, spec: TaskSpec, kind: str) -> _Rows:
    layout = spec.table_layout(kind)
    rows = _Rows(path, spec, spec.label_lookup(layout))
    sep = "tab" if layout.delimiter == "\t" else repr(layout.delimiter)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # full IMDB / Yelp reviews exceed the 128 KiB default
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter, quoting=layout.quoting)
    wanted = {"text_a": layout.text_a, "label": layout.label}
    if layout.text_b is not None:
        wanted["text_b"] = layout.text_b
    index: dict[str, int] = {}
    where: dict[str, str] = {}  # how a message names each wanted field
    width = None  # fields per row (headed files)
    skipped = 0
    roles = {"text_a": "the text", "text_b": "the second text", "label": "the label"}
    try:
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line (e.g. a trailing newline)
            if layout.header and width is None:
                header = [h.strip() for h in row]
                missing = [str(c) for c in wanted.values() if c not in header]
                if missing:
                    raise DataError(
                        f"{path}: line {line}: header has no column {', '.join(map(repr, missing))} "
                        f"(task {spec.name} needs {', '.join(repr(str(c)) for c in wanted.values())}; "
                        f"header: {', '.join(map(repr, header))})"
                    )
                index = {k: header.index(c) for k, c in wanted.items()}
                where = {k: f"column {c!r} (field {index[k] + 1})" for k, c in wanted.items()}
                width = len(header)
                continue
            if not index:
                index = {k: int(c) for k, c in wanted.items()}
                where = {k: f"field {index[k] + 1} ({roles[k]})" for k in wanted}
            need = max(index.values()) + 1
            if len(row) < need or (width is not None and len(row) > width):
                if layout.skip_short_rows and len(row) < need:
                    skipped += 1
                    continue
                short = min((k for k in index if index[k] >= len(row)), key=index.get, default=None)
                what = (
                    f"missing {where[short]}" if short is not None
                    else f"but the header has {width} (a stray {sep} inside a text?)"
                )
                raise DataError(f"{path}: line {line}: {len(row)} {sep}-separated field(s), {what}")
            a = row[index["text_a"]]
            b = row[index["text_b"]] if "text_b" in index else ""
            raw_label = row[index["label"]].strip()
            try:
                label = rows.class_id(raw_label, f"line {line}", where["label"])
            except DataError as e:
                if not layout.header and not rows.label and layout.note:
                    raise DataError(f"{e} ({layout.note})") from None
                raise
            rows.add(a, b, label)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: malformed {kind.upper()} row: {_one_line(e)}") from e
    if skipped:
        log.warning("%s: skipped %d row(s) with too few fields", path, skipped)
    return rows


def _parse_jsonl(path: Path, text: str, spec: TaskSpec) -> _Rows:
    rows = _Rows(path, spec, spec.label_lookup())
    fields = [("text_a", spec.text_a)] + ([("text_b", spec.text_b)] if spec.text_b else [])
    # split on "\n" only: str.splitlines() also splits at U+2028 / U+0085, which JSON strings may hold raw
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        loc = f"line {lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: {loc}: invalid JSON: {e.msg} at column {e.colno}") from e
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {loc}: expected a JSON object per line, got {_json_type_name(rec)}")
        texts = {}
        for key, name in [*fields, ("label", spec.label)]:
            if name not in rec:
                raise DataError(
                    f"{path}: {loc}: missing field {name!r} (task {spec.name} needs "
                    f"{', '.join(repr(n) for _, n in fields)} and {spec.label!r}; found: {', '.join(map(repr, rec))})"
                )
            if key != "label" and not isinstance(rec[name], str):
                raise DataError(f"{path}: {loc}: field {name!r} must be a string, got {_json_type_name(rec[name])}")
            texts[key] = rec[name]
        label = rows.class_id(texts.pop("label"), loc, f"field {spec.label!r}")
        rows.add(texts["text_a"], texts.get("text_b", ""), label)
    return rows


# --------------------------------------------------------------------------- public API


def read_cls_file(path: str | os.PathLike[str], *, spec: TaskSpec, split: str | None = None) -> datasets.Dataset:
    """Read one local file of task ``spec`` into the flat layout (``text_a``, ``text_b``, ``label``).

    Suffixes: ``.tsv``/``.tsv.gz`` and ``.csv``/``.csv.gz`` (the task's :class:`TableLayout`), ``.jsonl`` /
    ``.jsonl.gz`` (fields ``spec.text_a`` / ``spec.text_b`` / ``spec.label``).

    Raises:
        DataError: missing / empty / unreadable file, a missing column or field, an unknown label, a non-numeric
            regression score or an invalid JSON line; the one-line message names the file and the line.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a {spec.name} file ({', '.join(SUPPORTED_SUFFIXES)})")
    suffix = _suffix_of(p)
    if suffix is None:
        raise DataError(
            f"{p}: unsupported file type {''.join(p.suffixes) or '(no suffix)'!r} for task {spec.name}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    text = _read_text(p, gz=suffix.endswith(".gz"))
    kind = suffix.lstrip(".").split(".")[0]
    if kind == "jsonl":
        rows = _parse_jsonl(p, text, spec)
        reason = "empty file" if not text.strip() else "only blank lines"
    else:
        rows = _parse_table(p, text, spec, kind)
        headed = spec.table_layout(kind).header
        reason = "empty file" if not text.strip() else "header only" if headed else "only blank lines"
    return rows.to_dataset(split, reason)


def normalise_hub_cls(ds: datasets.Dataset, *, spec: TaskSpec, name: str, split: str) -> datasets.Dataset:
    """Bring a Hub dataset of task ``spec`` to exactly :data:`CLS_COLUMNS` / :func:`features_for` ``(spec)``.

    Rejects labels outside the task's ids (e.g. the ``-1`` of GLUE's unlabelled test splits).
    """
    where = f"Hub dataset {name!r} split {split!r}"
    needed = [spec.text_a, *([spec.text_b] if spec.text_b else []), spec.label]
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))} for task {spec.name} "
            f"(found: {', '.join(ds.column_names)})"
        )
    if len(ds) == 0:
        raise DataError(f"{where}: no examples")
    labels = ds[spec.label]
    for i, v in enumerate(labels):
        ok = (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if spec.is_regression
            else isinstance(v, int) and 0 <= v < spec.num_labels
        )
        if not ok:
            hint = " (an unlabelled test split? use a labelled split)" if v == -1 else ""
            allowed = "a number" if spec.is_regression else f"ids 0..{spec.num_labels - 1}"
            raise DataError(f"{where}: row {i}: label {v!r} is not one of {allowed} for task {spec.name}{hint}")
    keep = {spec.text_a: "text_a", spec.label: "label"}
    if spec.text_b:
        keep[spec.text_b] = "text_b"
    ds = ds.select_columns(list(keep)).rename_columns({k: v for k, v in keep.items() if k != v})
    if not spec.text_b:
        ds = ds.add_column("text_b", [""] * len(ds))
    ds = ds.select_columns(list(CLS_COLUMNS))
    try:
        ds = ds.cast(features_for(spec))
    except (ValueError, TypeError) as e:
        raise DataError(f"{where}: columns do not have the types of task {spec.name}: {_one_line(e)}") from e
    ds.info.description = _describe(spec)
    return ds


def load_cls(
    source: str | os.PathLike[str] | None,
    *,
    spec: TaskSpec,
    split: str,
    hub_name: str | None = None,
    hub_config: str | None = None,
    cache_dir: str | None = None,
    source_option: str = "the local data file option",
    local_config: str | None = None,
) -> datasets.Dataset:
    """Load one split of task ``spec``: from the local file ``source`` if given (the Hub is then never contacted),
    else from the Hub dataset ``hub_name`` / ``hub_config`` (``datasets.load_dataset``; any failure becomes one
    DataError line telling offline users to set ``source_option``, e.g. ``data.train_file``, or to use the data
    config ``local_config`` that reads local copies, e.g. ``sst2_local``)."""
    if source is not None and str(source) != "":
        return read_cls_file(source, spec=spec, split=split)
    if not hub_name:
        raise ConfigError(
            f"no dataset given for task {spec.name}: set {source_option} to a local file "
            f"({', '.join(SUPPORTED_SUFFIXES)}) or data.hub_name to a Hub dataset"
        )
    try:
        ds = datasets.load_dataset(hub_name, hub_config, split=split, cache_dir=cache_dir)
    except Exception as e:
        cfg = f" (config {hub_config!r})" if hub_config else ""
        local = f"use data={local_config} or " if local_config else ""
        raise DataError(
            f"could not load Hub dataset {hub_name!r}{cfg} split {split!r}: {type(e).__name__}: {_one_line(e)}; "
            f"offline users: {local}set {source_option} to a local file ({', '.join(SUPPORTED_SUFFIXES)})"
        ) from e
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"Hub dataset {hub_name!r} split {split!r}: expected a Dataset, got {type(ds).__name__}")
    return normalise_hub_cls(ds, spec=spec, name=hub_name, split=split)
