"""Reading a data source with ``datasets``: a local file or folder, or a Hugging Face Hub dataset.

Local files go through ``load_dataset("json" | "csv" | "parquet", data_files=...)``: gzip, split slicing
(``validation[:10%]``, ``train+validation``) and the Arrow cache keyed by the files' fingerprint all come from the
library. A folder is resolved with ``datasets``' own split-name patterns (``dev-v1.1.json.gz`` is the validation
split). Every failure becomes one :class:`DataError` line naming the file (or the Hub dataset) and the problem; the
layout adapters (``qa_sources``, ``cls_sources``) then turn the rows into one of skim's two schemas and check them.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pandas
from datasets.data_files import DataFilesDict, get_data_patterns
from datasets.utils.extract import Extractor

from skim.errors import ConfigError, DataError, one_line

# suffix (before an optional .gz) -> the packaged ``datasets`` builder that reads it
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".tsv": "csv", ".csv": "csv"}


def suffix_of(path: str | Path) -> str:
    """The format suffix of ``path`` (``.json`` for ``dev.json.gz``), or a DataError naming the supported ones."""
    name = Path(path).name.lower().removesuffix(".gz")
    suffix = next((s for s in BUILDERS if name.endswith(s)), None)
    if suffix is None:
        supported = ", ".join(f"{s}[.gz]" for s in BUILDERS)
        raise DataError(
            f"{path}: unsupported file type {''.join(Path(path).suffixes) or '(no suffix)'!r}; supported: {supported}"
        )
    return suffix


def _split_names(split: str) -> list[str]:
    """The split names a split spec reads: ``"train[:10%]+dev"`` -> ``["train", "dev"]``."""
    return list(dict.fromkeys(part.split("[", 1)[0].strip() for part in split.split("+")))


def _data_files(path: Path, split: str) -> tuple[dict[str, list[str]], str]:
    """``data_files`` for ``load_dataset`` and the one format suffix they share."""
    names = _split_names(split)
    if path.is_file():
        if len(names) > 1:
            raise ConfigError(
                f"split {split!r} combines several splits ({', '.join(names)}) but {path} is a single file; "
                "point the source at a folder holding one file per split"
            )
        return {names[0]: [str(path)]}, suffix_of(path)
    try:
        found = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except Exception as err:  # datasets raises EmptyDatasetError / FileNotFoundError for folders without data files
        raise DataError(f"{path}: no data files found ({one_line(err)})") from err
    files: dict[str, list[str]] = {}
    for name in names:
        if name not in found:
            raise DataError(
                f"{path}: no file for split {name!r} (found splits: {', '.join(map(str, found)) or 'none'}); pass the file path instead"
            )
        files[name] = [f for f in found[name] if Path(f).name.lower().removesuffix(".gz").endswith(tuple(BUILDERS))]
    if not all(files.values()):
        raise DataError(f"{path}: no {', '.join(BUILDERS)} file (optionally .gz) matches split {split!r}; pass the file path instead")
    suffixes = {suffix_of(f) for fs in files.values() for f in fs}
    if len(suffixes) != 1:
        listed = ", ".join(Path(f).name for fs in files.values() for f in fs)
        raise DataError(
            f"{path}: {len(listed.split(', '))} files of different formats match split {split!r} ({listed}); pass the file path instead"
        )
    return files, suffixes.pop()


def _string_columns(path: str, kwargs: dict[str, Any]) -> datasets.Features:
    """Every column of a TSV/CSV file as text: pandas would guess a type per column and per 10,000-row chunk, so a
    chunk of number-like texts, or a later chunk with an empty cell in a number column, would read differently."""
    names = kwargs.get("names")
    if names is None:
        header = {k: kwargs[k] for k in ("sep", "quoting") if k in kwargs}
        names = list(pandas.read_csv(path, nrows=0, index_col=False, **header).columns)
    return datasets.Features({str(name): datasets.Value("string") for name in names})


def _reason(err: BaseException) -> str:
    """The innermost cause of a ``datasets`` loading error (its own message only says that generation failed)."""
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    if "corresponds to no data" in str(err) or isinstance(err, pandas.errors.EmptyDataError):
        return "no rows"
    if isinstance(err, KeyError):  # a JSON file without the field the layout reads its records from
        return f"no top-level field {err.args[0]!r} (the layout reads its records from there)"
    return f"{type(err).__name__}: {one_line(err)}"


class BadRow(DataError):
    """A check's finding about the row numbered ``row`` in the ``_row`` column; :meth:`Source.checking` turns it into
    one line naming the file, the row in the file and its line. ``at`` follows the row: a path inside the record
    (``.paragraphs[1].qas[0]``), an id."""

    def __init__(self, row: int, problem: str, at: str = ""):
        super().__init__(problem)
        self.row, self.problem, self.at = row, problem, at


def _line(path: str, suffix: str, row: int, options: dict[str, Any]) -> int | None:
    """The line on which data row ``row`` of a JSON-lines or TSV/CSV file starts. Blank lines are skipped as the readers
    skip them: pyarrow lines of JSON whitespace, pandas lines of spaces and tabs (other than the separator), and a
    header line comes first unless ``names`` are given. None where a row has no line of its own (parquet, a JSON
    list, an archive) or where a quote before it may have joined lines (CSV)."""
    compression = Extractor.infer_extractor_format(path)
    if suffix == ".parquet" or compression not in (None, "gzip"):
        return None
    table = BUILDERS[suffix] == "csv"
    blank = " \t".replace(options.get("sep", ","), "") if table else " \t"
    target = row + int(table and "names" not in options)
    with (gzip.open if compression else open)(path, "rt", encoding="utf-8", errors="replace", newline=None) as f:
        for number, line in enumerate(f, 1):
            text = line.rstrip("\n")
            if not text.strip(blank):
                continue
            if not table and text.lstrip(" \t\ufeff").startswith("["):  # a JSON list, not JSON lines
                return None
            if not target:
                return number
            if table and options.get("quoting") != csv.QUOTE_NONE and '"' in text:
                return None
            target -= 1
    return None


@dataclasses.dataclass
class Source:
    """The splits that a split spec reads, as stored. Their rows are numbered in a ``_row`` column (in order across
    the splits), which travels through the layout adapters, slices and filters: a finding names the row of the file."""

    parts: dict[str, datasets.Dataset]
    where: str  # the file, folder or Hub dataset, for messages
    suffix: str  # the local format (".json", ".tsv", ...) or "hub"
    files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the builder's (field, names, sep, quoting)

    def __post_init__(self) -> None:
        start = 0
        for name, rows in self.parts.items():
            self.parts[name] = rows.add_column("_row", range(start, start + len(rows)))
            start += len(rows)

    def locate(self, row: int) -> str:
        """``<file>: row <r> (line <l>)``, ``<file>: data[<r>]`` for a nested JSON, or the split's row for the Hub or a
        split of several files."""
        for name, rows in self.parts.items():
            if row < len(rows):
                break
            row -= len(rows)
        files = self.files.get(name, [])
        if len(files) != 1:
            return f"{self.where} split {name!r}: row {row}"
        if self.options.get("field"):
            return f"{files[0]}: {self.options['field']}[{row}]"
        line = _line(files[0], self.suffix, row, self.options)
        return f"{files[0]}: row {row}" + (f" (line {line})" if line else "")

    @contextlib.contextmanager
    def checking(self) -> Iterator[None]:
        """A finding becomes one located line; local files that fail their checks leave nothing behind: the Arrow files
        ``datasets`` wrote for them (the parsed rows and any map over them, in one folder per file set) are removed."""
        try:
            yield
        except DataError as err:
            if self.suffix != "hub":  # a Hub download is the user's cache, whatever its rows hold
                for rows in self.parts.values():
                    for f in rows.cache_files:
                        # <cache>/<builder>/<config: the files' hash>/<version>/<hash>/<name>.arrow
                        config = Path(f["filename"]).parents[2]
                        if config.parent.name in BUILDERS.values():
                            shutil.rmtree(config, ignore_errors=True)
                            for lock in config.parents[1].glob(f"*{config.name}*.lock"):
                                lock.unlink(missing_ok=True)
                            with contextlib.suppress(OSError):  # the builder's folder, unless other files use it
                                config.parent.rmdir()
            if isinstance(err, BadRow):
                raise DataError(f"{self.locate(err.row)}{err.at}: {err.problem}") from None
            raise


def load_rows(
    source: str | None,
    *,
    split: str,
    hub_name: str | None,
    hub_config: str | None = None,
    cache_dir: str | None = None,
    option: str = "the local data file option",
    local_config: str | None = None,
    file_kwargs: dict[str, dict[str, Any]] | None = None,
) -> Source:
    """The splits that the split spec ``split`` reads, as stored.

    The spec's slices are applied by :func:`take_split` after the layout adapter, so that ``validation[:100]``
    counts questions, not the articles of a nested file. ``file_kwargs[suffix]`` are extra builder arguments
    for that format (a TSV's separator, a nested JSON's ``field``). ``option`` / ``local_config`` say what offline
    users can set when the Hub is unreachable.
    """
    names = _split_names(split)
    if source:
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: file not found")
        files, suffix = _data_files(path, split)
        kwargs = dict((file_kwargs or {}).get(suffix, {}))
        # datasets keys a local file's cache on its path and modification time (seconds); the size and the time in
        # nanoseconds join the key here, so a file rewritten within a second, or with its time restored, is read again
        stats = [Path(f).stat() for fs in files.values() for f in fs]
        kwargs["description"] = "files " + " ".join(f"{st.st_size}:{st.st_mtime_ns}" for st in stats)
        try:
            with warnings.catch_warnings():
                # pandas only warns when a TSV/CSV row has more fields than the header, and drops them
                warnings.simplefilter("error", pandas.errors.ParserWarning)
                if BUILDERS[suffix] == "csv":
                    kwargs["features"] = _string_columns(next(iter(files.values()))[0], kwargs)
                parts = datasets.load_dataset(BUILDERS[suffix], data_files=files, cache_dir=cache_dir, **kwargs)
        except (ConfigError, DataError):
            raise
        except Exception as err:  # the readers raise pyarrow, pandas, json and gzip errors alike
            raise DataError(f"{path}: cannot be read as {suffix} data: {_reason(err)}") from err
        return Source(dict(parts), str(path), suffix, files, kwargs)
    if not hub_name:
        raise ConfigError(
            f"no dataset given: set {option} to a local file or folder, or data.hub_name to a Hub dataset"
        )
    config = f" (config {hub_config!r})" if hub_config else ""
    try:
        parts = {name: datasets.load_dataset(hub_name, hub_config, split=name, cache_dir=cache_dir) for name in names}
    except Exception as err:
        local = f"use data={local_config} or " if local_config else ""
        raise DataError(
            f"could not load Hub dataset {hub_name!r}{config} split {split!r}: {type(err).__name__}: {one_line(err)}; "
            f"offline users: {local}set {option} to a local file"
        ) from err
    return Source(parts, f"Hub dataset {hub_name!r}{config}", "hub")


def take_split(parts: dict[str, datasets.Dataset], split: str, where: str) -> datasets.Dataset:
    """The rows the split spec selects (``train[:10%]+validation[-2:]``), with ``datasets``' own spec semantics."""
    try:
        instructions = datasets.ReadInstruction.from_spec(split).to_absolute(
            {name: len(rows) for name, rows in parts.items()}
        )
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"split {split!r}: invalid split specification: {one_line(err)}") from err
    pieces = [parts[i.splitname].select(range(i.from_, i.to)) for i in instructions]  # contiguous: an Arrow slice
    if not sum(map(len, pieces)):
        raise DataError(f"{where}: split {split!r} selects no rows")
    return pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No ``datasets`` progress bar for a pass that takes well under a second (checks, label conversion)."""
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()
