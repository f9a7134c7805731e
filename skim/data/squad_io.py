"""Loading SQuAD-format extractive-QA data into a flat :class:`datasets.Dataset`.

Every loader returns the same flat HF layout (see :data:`SQUAD_FEATURES`)::

    id (str), title (str), context (str), question (str),
    answers {"text": list[str], "answer_start": list[int]}, is_impossible (bool)

Local files are parsed with the stdlib / pyarrow and validated strictly: every
problem becomes a :class:`skim.errors.DataError` whose single-line message names
the file and the exact location (``data[3].paragraphs[0].qas[2]`` or ``row 17``).
Bad answer offsets are reported, never silently repaired, because a shifted
``answer_start`` silently corrupts the training labels.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skim.errors import ConfigError, DataError

__all__ = [
    "SPLIT_ALIASES",
    "SQUAD_COLUMNS",
    "SQUAD_FEATURES",
    "SUPPORTED_SUFFIXES",
    "dataset_fingerprint_of_file",
    "find_split_file",
    "load_squad",
    "normalise_hub_dataset",
    "read_squad_file",
]

SQUAD_COLUMNS: tuple[str, ...] = ("id", "title", "context", "question", "answers", "is_impossible")

SQUAD_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        # Same struct-of-lists shape as the Hub `squad` / `squad_v2` datasets.
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
        "is_impossible": datasets.Value("bool"),
    }
)

# Longest suffixes first so ".json.gz" is not mistaken for ".gz".
SUPPORTED_SUFFIXES: tuple[str, ...] = (".json.gz", ".jsonl.gz", ".json", ".jsonl", ".parquet")

# File-name tokens that identify a split inside a data directory
# (e.g. "dev-v1.1.json.gz" is the validation split).
SPLIT_ALIASES: dict[str, frozenset[str]] = {
    "train": frozenset({"train", "training"}),
    "validation": frozenset({"validation", "valid", "val", "dev"}),
    "test": frozenset({"test"}),
}

# Bump when the parsing / normalisation changes, so fingerprint-keyed caches are invalidated.
_READER_VERSION = "squad_io-1"

_FLAT_REQUIRED = ("id", "context", "question", "answers")
# v1.1 scoring takes the best match over a question's gold answers: a question without one cannot be scored
_V1_NEEDS_ANSWERS = (
    "SQuAD v1.1 data needs an answer for every question; for data with unanswerable questions use data=squad_v2"
)
_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------- helpers


def _one_line(text: object, limit: int = 300) -> str:
    """Collapse an arbitrary (library) error text into one bounded line for the CLI."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _short_repr(text: str, limit: int = 60) -> str:
    # repr() escapes newlines, keeping the error message on one line.
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {str: "string", int: "integer", bool: "boolean", list: "list", dict: "object"}
    tup = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in tup)


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    return {str: "string", bool: "boolean", int: "integer", float: "number", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _is_type(value: object, types: type | tuple[type, ...]) -> bool:
    tup = types if isinstance(types, tuple) else (types,)
    # bool is a subclass of int: `"answer_start": true` must not pass as an offset.
    if isinstance(value, bool) and bool not in tup:
        return False
    return isinstance(value, tup)


def _suffix_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


class _Columns:
    """Column-wise accumulator: python lists, then one Arrow table (the fast path)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id: list[str] = []
        self.title: list[str] = []
        self.context: list[str] = []
        self.question: list[str] = []
        self.answers: list[dict[str, list[Any]]] = []
        self.is_impossible: list[bool] = []
        self._seen: dict[str, str] = {}

    def add(
        self,
        *,
        loc: str,
        qid: str,
        title: str,
        context: str,
        question: str,
        texts: list[str],
        starts: list[int],
        is_impossible: bool | None,
        check_offsets: bool,
        require_answers: bool,
    ) -> None:
        path = self.path
        if qid in self._seen:
            # Duplicate ids would make evaluation (predictions keyed by id) silently wrong.
            raise DataError(f"{path}: {loc}: duplicate id {qid!r} (first seen at {self._seen[qid]})")
        self._seen[qid] = loc
        if not qid.strip():
            raise DataError(f"{path}: {loc}: empty id (predictions are scored by question id)")
        if not context.strip():
            raise DataError(f"{path}: {loc} (id {qid!r}): empty context")
        if not question.strip():
            raise DataError(f"{path}: {loc} (id {qid!r}): empty question")
        if is_impossible and texts:
            raise DataError(
                f"{path}: {loc} (id {qid!r}): is_impossible is true but {len(texts)} answer(s) are given "
                "(unanswerable questions must have answers [])"
            )
        if require_answers and not texts:
            what = "is_impossible is true" if is_impossible else "question has no answers"
            raise DataError(f"{path}: {loc} (id {qid!r}): {what}; {_V1_NEEDS_ANSWERS}")
        for a, (text, start) in enumerate(zip(texts, starts)):
            if not text.strip():
                raise DataError(f"{path}: {loc}.answers[{a}] (id {qid!r}): empty answer text")
            if check_offsets:
                found = context[start : start + len(text)] if start >= 0 else ""
                if found != text:
                    raise DataError(
                        f"{path}: {loc}.answers[{a}] (id {qid!r}): answer_start {start} does not match the "
                        f"context: expected {_short_repr(text)}, context has {_short_repr(found)} there "
                        f"(context length {len(context)})"
                    )
        self.id.append(qid)
        self.title.append(title)
        self.context.append(context)
        self.question.append(question)
        self.answers.append({"text": texts, "answer_start": starts})
        self.is_impossible.append(bool(is_impossible))

    def to_dataset(self, split: str | None = None) -> datasets.Dataset:
        if not self.id:
            raise DataError(f"{self.path}: the dataset contains no questions")
        # Build the Arrow table directly: `Dataset.from_dict` encodes every nested answer
        # in python, which is ~5x slower on the 87k-question train file. The values were
        # already type-checked above, so no per-example encoding is needed.
        table = pa.Table.from_pydict(
            {
                "id": self.id,
                "title": self.title,
                "context": self.context,
                "question": self.question,
                "answers": self.answers,
                "is_impossible": self.is_impossible,
            },
            schema=SQUAD_FEATURES.arrow_schema,
        )
        # In-memory datasets otherwise get a random fingerprint; a file-derived one makes
        # downstream `.map` fingerprints (and tokenisation caches keyed on them) reproducible.
        fingerprint = hashlib.sha256(
            f"{dataset_fingerprint_of_file(self.path)}|{_READER_VERSION}".encode()
        ).hexdigest()[:16]
        return datasets.Dataset(
            table,
            info=datasets.DatasetInfo(features=SQUAD_FEATURES),
            split=datasets.NamedSplit(split) if split else None,
            fingerprint=fingerprint,
        )


# --------------------------------------------------------------------------- raw reading


def _read_bytes(path: Path, gz: bool) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read file: {_one_line(e)}") from e
    if gz:
        if not raw.startswith(_GZIP_MAGIC):
            raise DataError(f"{path}: not a gzip file (bad magic bytes); use a plain .json/.jsonl suffix if it is not compressed")
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data: {_one_line(e)}") from e
    if raw.startswith(_GZIP_MAGIC):
        raise DataError(f"{path}: file is gzip-compressed but its name does not end in .gz; rename it to *{path.suffix}.gz")
    return raw


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # -sig: tolerate a BOM written by some editors
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 text (byte offset {e.start}): {e.reason}") from e


def _loads(path: Path, text: str, where: str = "") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = ""
        if e.msg == "Extra data" and not where:
            hint = " (several JSON values: if the file has one record per line, name it *.jsonl)"
        raise DataError(
            f"{path}: invalid JSON{where}: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos}){hint}"
        ) from e


# --------------------------------------------------------------------------- nested (official) layout


def _field(obj: Mapping[str, Any], key: str, types: type | tuple[type, ...], path: Path, loc: str) -> Any:
    if key not in obj:
        raise DataError(f"{path}: {loc}: missing field {key!r}")
    value = obj[key]
    if not _is_type(value, types):
        raise DataError(f"{path}: {loc}.{key}: expected {_type_name(types)}, got {_json_type_name(value)}")
    return value


def _parse_nested(
    path: Path, doc: Any, cols: _Columns, *, check_offsets: bool, require_answers: bool
) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        got = f"an object with keys {sorted(doc)[:8]}" if isinstance(doc, dict) else _json_type_name(doc)
        hint = ""
        if isinstance(doc, dict) and "context" in doc and "question" in doc:
            hint = "; this looks like a single flat record: for one record per line use a *.jsonl file"
        elif isinstance(doc, list):
            hint = "; for flat records use a *.jsonl file (one JSON object per line)"
        raise DataError(
            f"{path}: not SQuAD-shaped: expected a JSON object with keys 'version' and 'data' "
            f"(data = list of articles with 'title' and 'paragraphs'), got {got}{hint}"
        )
    for i, article in enumerate(doc["data"]):
        aloc = f"data[{i}]"
        if not isinstance(article, dict):
            raise DataError(f"{path}: {aloc}: expected an object, got {_json_type_name(article)}")
        # Title is unused by the models and absent from some SQuAD-style exports: optional.
        title = article.get("title", "")
        if not isinstance(title, str):
            raise DataError(f"{path}: {aloc}.title: expected string, got {_json_type_name(title)}")
        paragraphs = _field(article, "paragraphs", list, path, aloc)
        for j, para in enumerate(paragraphs):
            ploc = f"{aloc}.paragraphs[{j}]"
            if not isinstance(para, dict):
                raise DataError(f"{path}: {ploc}: expected an object, got {_json_type_name(para)}")
            context = _field(para, "context", str, path, ploc)
            qas = _field(para, "qas", list, path, ploc)
            for k, qa in enumerate(qas):
                qloc = f"{ploc}.qas[{k}]"
                if not isinstance(qa, dict):
                    raise DataError(f"{path}: {qloc}: expected an object, got {_json_type_name(qa)}")
                qid = _field(qa, "id", str, path, qloc)
                question = _field(qa, "question", str, path, qloc)
                is_imp = qa.get("is_impossible")
                if is_imp is not None and not isinstance(is_imp, bool):
                    raise DataError(f"{path}: {qloc}.is_impossible: expected boolean, got {_json_type_name(is_imp)}")
                # v2 files sometimes omit "answers" for unanswerable questions.
                answers = [] if (is_imp and "answers" not in qa) else _field(qa, "answers", list, path, qloc)
                texts: list[str] = []
                starts: list[int] = []
                for a, ans in enumerate(answers):
                    aloc2 = f"{qloc}.answers[{a}]"
                    if not isinstance(ans, dict):
                        raise DataError(f"{path}: {aloc2}: expected an object, got {_json_type_name(ans)}")
                    texts.append(_field(ans, "text", str, path, aloc2))
                    starts.append(_field(ans, "answer_start", int, path, aloc2))
                cols.add(
                    loc=qloc,
                    qid=qid,
                    title=title,
                    context=context,
                    question=question,
                    texts=texts,
                    starts=starts,
                    is_impossible=is_imp,
                    check_offsets=check_offsets,
                    require_answers=require_answers,
                )


# --------------------------------------------------------------------------- flat (HF) layout


def _add_flat_record(
    path: Path,
    rec: Mapping[str, Any],
    loc: str,
    cols: _Columns,
    *,
    check_offsets: bool,
    require_answers: bool,
) -> None:
    qid = _field(rec, "id", str, path, loc)
    context = _field(rec, "context", str, path, loc)
    question = _field(rec, "question", str, path, loc)
    title = rec.get("title")
    if title is None:  # optional column / null cell
        title = ""
    elif not isinstance(title, str):
        raise DataError(f"{path}: {loc}.title: expected string, got {_json_type_name(title)}")
    is_imp = rec.get("is_impossible")
    if is_imp is not None and not isinstance(is_imp, bool):
        raise DataError(f"{path}: {loc}.is_impossible: expected boolean, got {_json_type_name(is_imp)}")
    answers = _field(rec, "answers", dict, path, loc)
    aloc = f"{loc}.answers"
    texts = _field(answers, "text", list, path, aloc)
    starts = _field(answers, "answer_start", list, path, aloc)
    if len(texts) != len(starts):
        raise DataError(
            f"{path}: {aloc} (id {qid!r}): 'text' has {len(texts)} entries but 'answer_start' has {len(starts)}"
        )
    for a, (t, s) in enumerate(zip(texts, starts)):
        if not isinstance(t, str):
            raise DataError(f"{path}: {aloc}.text[{a}] (id {qid!r}): expected string, got {_json_type_name(t)}")
        if not _is_type(s, int):
            raise DataError(
                f"{path}: {aloc}.answer_start[{a}] (id {qid!r}): expected integer, got {_json_type_name(s)}"
            )
    cols.add(
        loc=loc,
        qid=qid,
        title=title,
        context=context,
        question=question,
        texts=list(texts),
        starts=list(starts),
        is_impossible=is_imp,
        check_offsets=check_offsets,
        require_answers=require_answers,
    )


def _parse_jsonl(path: Path, text: str, cols: _Columns, *, check_offsets: bool, require_answers: bool) -> None:
    row = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are harmless
        loc = f"row {row} (line {lineno})"
        rec = _loads(path, line, where=f" in {loc}")
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {loc}: expected a JSON object per line, got {_json_type_name(rec)}")
        _add_flat_record(path, rec, loc, cols, check_offsets=check_offsets, require_answers=require_answers)
        row += 1


def _parse_parquet(path: Path, cols: _Columns, *, check_offsets: bool, require_answers: bool) -> None:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read parquet file: {_one_line(e)}") from e
    missing = [c for c in _FLAT_REQUIRED if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: missing required column(s) {', '.join(map(repr, missing))} "
            f"(found: {', '.join(table.column_names)}; required: {', '.join(_FLAT_REQUIRED)})"
        )
    # Column-wise conversion is much faster than per-row `to_pylist` on large tables.
    wanted = [c for c in ("id", "title", "context", "question", "answers", "is_impossible") if c in table.column_names]
    data = {c: table.column(c).to_pylist() for c in wanted}
    n = table.num_rows
    for i in range(n):
        rec = {c: data[c][i] for c in wanted}
        _add_flat_record(path, rec, f"row {i}", cols, check_offsets=check_offsets, require_answers=require_answers)


# --------------------------------------------------------------------------- public API


def read_squad_file(
    path: str | os.PathLike[str],
    *,
    check_offsets: bool = True,
    require_answers: bool = False,
    split: str | None = None,
) -> datasets.Dataset:
    """Read one local SQuAD file into the flat layout of :data:`SQUAD_FEATURES`.

    Supported suffixes: ``.json`` / ``.json.gz`` (official nested layout), ``.jsonl`` /
    ``.jsonl.gz`` (one flat HF record per line) and ``.parquet`` (flat HF columns).

    Args:
        check_offsets: verify ``context[start:start+len(text)] == text`` for every answer.
        require_answers: reject questions without an answer, ``is_impossible`` or not (SQuAD v1.1, which
            scores every question against its gold answers).
        split: optional split name recorded in the dataset's metadata.

    Raises:
        DataError: on any missing, unreadable or malformed input (one line, names file and location).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a SQuAD file ({', '.join(SUPPORTED_SUFFIXES)})")
    suffix = _suffix_of(p)
    if suffix is None:
        raise DataError(
            f"{p}: unsupported file type {''.join(p.suffixes) or '(no suffix)'!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    cols = _Columns(p)
    kw = {"check_offsets": check_offsets, "require_answers": require_answers}
    if suffix == ".parquet":
        _parse_parquet(p, cols, **kw)
    else:
        text = _decode(p, _read_bytes(p, gz=suffix.endswith(".gz")))
        if suffix.startswith(".jsonl"):
            _parse_jsonl(p, text, cols, **kw)
        else:
            _parse_nested(p, _loads(p, text), cols, **kw)
    return cols.to_dataset(split)


def find_split_file(directory: str | os.PathLike[str], split: str) -> Path:
    """Return the single supported file in ``directory`` whose name marks it as ``split``.

    File names are split into alphanumeric tokens and matched against :data:`SPLIT_ALIASES`
    (``dev-v1.1.json.gz`` -> validation, ``train.json`` -> train). Exactly one match is required,
    so a directory holding both ``dev.json.gz`` and ``validation.parquet`` is reported, not guessed.
    """
    d = Path(directory)
    aliases = SPLIT_ALIASES.get(split, frozenset({split.lower()}))
    candidates = sorted(
        f
        for f in d.iterdir()
        if f.is_file() and _suffix_of(f) is not None and aliases & set(re.split(r"[^a-z0-9]+", f.name.lower()))
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataError(
            f"{d}: no file for split {split!r} (looked for {', '.join(SUPPORTED_SUFFIXES)} files whose name "
            f"contains one of {sorted(aliases)}); pass the file path instead"
        )
    raise DataError(
        f"{d}: {len(candidates)} files match split {split!r} ({', '.join(f.name for f in candidates)}); "
        "pass the file path instead"
    )


def _apply_split_spec(ds_for: Callable[[str], datasets.Dataset], split: str, source: str) -> datasets.Dataset:
    """Resolve HF split syntax ("validation[:10%]", "train+validation") for local data."""
    try:
        instr = datasets.ReadInstruction.from_spec(split)
    except (ValueError, AssertionError) as e:
        raise ConfigError(f"split {split!r}: invalid split specification: {_one_line(e)}") from e
    # Split names are needed before sizes are known: "train[:10%]+dev" -> ["train", "dev"].
    names: list[str] = []
    for part in split.split("+"):
        name = part.split("[", 1)[0].strip()
        if name not in names:
            names.append(name)
    loaded = {name: ds_for(name) for name in names}
    pieces = []
    for absolute in instr.to_absolute({n: len(d) for n, d in loaded.items()}):
        d = loaded[absolute.splitname]
        if absolute.from_ == 0 and absolute.to == len(d):
            pieces.append(d)
        else:
            pieces.append(d.select(range(absolute.from_, absolute.to)))
    if any(len(p) == 0 for p in pieces):
        raise DataError(f"{source}: split {split!r} selects no questions")
    return pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)


def _is_v2_name(hub_name: str, hub_config: str | None) -> bool:
    text = f"{hub_name} {hub_config or ''}".lower()
    return "squad_v2" in text or "v2" in re.split(r"[^a-z0-9]+", text) or "squadv2" in text


def normalise_hub_dataset(ds: datasets.Dataset, *, name: str, is_v2: bool) -> datasets.Dataset:
    """Bring a Hub SQuAD-like dataset to exactly :data:`SQUAD_COLUMNS` / :data:`SQUAD_FEATURES`.

    ``is_impossible`` is kept if present, else derived as "no answers" for v2 data and False for v1.
    """
    missing = [c for c in _FLAT_REQUIRED if c not in ds.column_names]
    if missing:
        raise DataError(
            f"Hub dataset {name!r}: missing required column(s) {', '.join(map(repr, missing))} "
            f"(found: {', '.join(ds.column_names)})"
        )
    if "title" not in ds.column_names:
        ds = ds.add_column("title", [""] * len(ds))
    if "is_impossible" not in ds.column_names:
        if is_v2:
            flags = [len(a["text"]) == 0 for a in ds["answers"]]
        else:
            flags = [False] * len(ds)
        ds = ds.add_column("is_impossible", flags)
    ds = ds.select_columns(list(SQUAD_COLUMNS))
    try:
        return ds.cast(SQUAD_FEATURES)
    except (ValueError, TypeError) as e:
        raise DataError(f"Hub dataset {name!r}: columns do not have the SQuAD types: {_one_line(e)}") from e


def load_squad(
    source: str | os.PathLike[str] | None,
    *,
    hub_name: str | None,
    hub_config: str | None = None,
    split: str,
    cache_dir: str | None = None,
    check_offsets: bool = True,
    require_answers: bool = False,
    source_option: str = "the local data file option",
    local_config: str | None = None,
) -> datasets.Dataset:
    """Load one split of SQuAD-format data, from a local file/directory or the HF Hub.

    Args:
        source: a SQuAD file, or a directory holding exactly one file for ``split``
            (see :func:`find_split_file`). When given, the Hub is never contacted.
        hub_name / hub_config: ``datasets.load_dataset`` arguments used when ``source`` is None.
        split: split name; HF slicing syntax (``"validation[:500]"``) also works for local data.
        require_answers: reject questions without an answer (SQuAD v1.1), see :func:`read_squad_file`.
        source_option: how the caller's config names ``source`` (e.g. ``"data.validation_file"``),
            used in the message telling offline users what to set.
        local_config: a data config reading local copies (e.g. ``"squad_local"``), also suggested to them.
    """
    if source is not None and str(source) != "":
        src = Path(source)
        if not src.exists():
            raise DataError(f"{src}: file not found")

        def _read(name: str) -> datasets.Dataset:
            if src.is_dir():
                return read_squad_file(
                    find_split_file(src, name), check_offsets=check_offsets, require_answers=require_answers, split=name
                )
            return read_squad_file(src, check_offsets=check_offsets, require_answers=require_answers, split=name)

        if re.fullmatch(r"[\w.-]+", split):  # plain split name: skip the split-spec machinery
            return _read(split)
        if src.is_file():
            # A single file holds one split; the (one) split name in the spec refers to it.
            names = {part.split("[", 1)[0].strip() for part in split.split("+")}
            if len(names) > 1:
                raise ConfigError(
                    f"split {split!r} combines several splits ({', '.join(sorted(names))}) but {src} is a "
                    "single file; point the source at a directory holding one file per split"
                )
        return _apply_split_spec(_read, split, str(src))

    if not hub_name:
        raise ConfigError(f"no dataset given: set {source_option} to a SQuAD file, or a Hub dataset name")
    try:
        ds = datasets.load_dataset(hub_name, hub_config, split=split, cache_dir=cache_dir)
    except Exception as e:
        cfg = f" (config {hub_config!r})" if hub_config else ""
        local = f"use data={local_config} or " if local_config else ""
        raise DataError(
            f"could not load Hub dataset {hub_name!r}{cfg} split {split!r}: {type(e).__name__}: {_one_line(e)}; "
            f"offline users: {local}set {source_option} to a local SQuAD file (.json/.json.gz/.jsonl/.parquet)"
        ) from e
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"Hub dataset {hub_name!r} split {split!r}: expected a Dataset, got {type(ds).__name__}")
    ds = normalise_hub_dataset(ds, name=hub_name, is_v2=_is_v2_name(hub_name, hub_config))
    _check_hub_rows(ds, f"Hub dataset {hub_name!r} split {split!r}", require_answers=require_answers)
    return ds


def _check_hub_rows(ds: datasets.Dataset, where: str, *, require_answers: bool) -> None:
    """What scoring by question id relies on, checked column-wise (Hub rows are not parsed one by one)."""
    table = ds.with_format("arrow")[:].select(["id", "answers"]).flatten()
    ids = table.column("id").to_pylist()
    seen: set[str] = set()
    for qid in ids:
        if qid in seen:
            raise DataError(f"{where}: duplicate id {qid!r} (predictions are keyed by question id)")
        seen.add(qid)
    if require_answers:
        first = pc.index(pc.equal(pc.list_value_length(table.column("answers.text")), 0), True).as_py()
        if first >= 0:
            raise DataError(f"{where}: row {first} (id {ids[first]!r}): question has no answers; {_V1_NEEDS_ANSWERS}")


def dataset_fingerprint_of_file(path: str | os.PathLike[str]) -> str:
    """Short stable hash of a file's absolute path, size and mtime (keys tokenisation caches).

    Cheap (one ``stat``) rather than a content hash: editing or replacing the file changes
    size or mtime, which is what cache invalidation needs.
    """
    p = Path(path).resolve()
    try:
        st = p.stat()
    except FileNotFoundError as e:
        raise DataError(f"{p}: file not found") from e
    return hashlib.sha256(f"{p}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
