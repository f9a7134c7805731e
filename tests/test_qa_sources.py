"""Extractive-QA sources on ``datasets``: the real SQuAD files in every layout, folders and split specs, the Hub
path, bad files as one DataError line; and skim's synthetic data sets."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skim.data import sources
from skim.data.qa_sources import QA_FEATURES, load_qa
from skim.data.synthetic import make_synthetic_squad, synthetic_json_bytes, write_synthetic_squad
from skim.errors import ConfigError, DataError, SkimError
from tests.conftest import SHARED_DATA, require_shared


def _read(path: Path | str | None, split: str = "train", require_answers: bool = False, **kw: Any) -> datasets.Dataset:
    kw.setdefault("hub_name", None)
    return load_qa(str(path) if path else None, layout="squad", split=split, require_answers=require_answers, **kw)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def dev_v11() -> datasets.Dataset:
    return _read(require_shared(SHARED_DATA / "squad_v1.1") / "dev-v1.1.json.gz", require_answers=True)


def test_real_dev_v11_json_gz_and_parquet_agree(dev_v11: datasets.Dataset) -> None:
    assert dev_v11.num_rows == 10570 and dev_v11.features == QA_FEATURES
    assert len(set(dev_v11["id"])) == 10570 and not any(dev_v11["is_impossible"])
    row = dev_v11[0]
    assert row["id"] == "56be4db0acb8001400a502ec" and row["answers"]["text"][0] == "Denver Broncos"
    start = row["answers"]["answer_start"][0]
    assert row["context"][start : start + len("Denver Broncos")] == "Denver Broncos"
    parquet = _read(SHARED_DATA / "squad_v1.1" / "validation-00000-of-00001.parquet", require_answers=True)
    assert parquet.features == QA_FEATURES
    for column in ("id", "context", "question", "answers"):
        assert parquet[column] == dev_v11[column], column


def test_real_dev_v2() -> None:
    ds = _read(require_shared(SHARED_DATA / "squad_v2.0") / "dev-v2.0.reconstructed.json.gz")
    flags = ds["is_impossible"]
    assert ds.num_rows == 11873 and sum(flags) == 5945
    assert all(imp == (len(a["text"]) == 0) for imp, a in zip(flags, ds["answers"]))  # unanswerable <=> no answers


def test_real_folder_is_ambiguous_and_a_file_slices() -> None:
    folder = require_shared(SHARED_DATA / "squad_v1.1")
    # dev-v1.1.json.gz and validation-*.parquet both match "validation": refuse to guess
    with pytest.raises(DataError, match="different formats match split 'validation'"):
        _read(folder, split="validation")
    assert _read(folder / "dev-v1.1.json.gz", split="validation[:100]").num_rows == 100


# --------------------------------------------------------------------------- local files


def _doc(qas: list[dict[str, Any]] | None = None, context: str = "Paris is in France.") -> dict[str, Any]:
    if qas is None:
        qas = [{"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
               {"id": "q2", "question": "What is in France?", "answers": [{"text": "Paris", "answer_start": 0}]}]  # fmt: skip
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def _write_json(path: Path, obj: Any, gz: bool = False) -> Path:
    data = json.dumps(obj).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_every_layout_and_compression(tmp_path: Path) -> None:
    for name, gz in (("a.json", False), ("a.json.gz", True), ("packed.json", True)):  # gzip is detected, not named
        ds = _read(_write_json(tmp_path / name, _doc(), gz))
        assert ds["id"] == ["q1", "q2"] and ds["title"] == ["T", "T"]
    flat = [{"id": "q1", "title": "T", "context": "Paris is in France.", "question": "Where?",
             "answers": {"text": ["France"], "answer_start": [12]}},
            {"id": "q2", "context": "No answer here.", "question": "Why?", "is_impossible": True,
             "answers": {"text": [], "answer_start": []}}]  # fmt: skip
    lines = "\n".join(json.dumps(r) for r in flat) + "\n\n"
    (tmp_path / "a.jsonl").write_text(lines)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    for name in ("a.jsonl", "a.jsonl.gz"):
        ds = _read(tmp_path / name)
        assert ds["is_impossible"] == [False, True] and ds["title"] == ["T", ""]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "a.parquet")
    ds = _read(tmp_path / "a.parquet")
    assert ds.features == QA_FEATURES and ds["answers"][1] == {"text": [], "answer_start": []}


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a broken file, what its one-line error says)"""
    missing, no_context, string_start = _doc(), _doc(), _doc()
    del missing["data"][0]["paragraphs"][0]["qas"][1]["question"]
    del no_context["data"][0]["paragraphs"][0]["context"]
    string_start["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = "12"
    good = json.dumps({"id": "a", "context": "abc", "question": "q", "answers": {"text": ["a"], "answer_start": [0]}})
    (tmp / "plain.json.gz").write_text(json.dumps(_doc()))
    (tmp / "trunc.json.gz").write_bytes(gzip.compress(json.dumps(_doc()).encode())[:30])
    (tmp / "broken.json").write_text('{"version": "1.1",\n "data": [ {"title": "x",, } ]}')
    (tmp / "records.json").write_text('{"id": "a"}\n{"id": "b"}\n')
    (tmp / "nodata.json").write_text('{"version": "1.1"}')
    (tmp / "junk.parquet").write_bytes(b"not parquet at all")
    pq.write_table(
        pa.table({"id": ["a"], "context": ["c"], "answers": [{"text": ["c"], "answer_start": [0]}]}),
        tmp / "flat.parquet",
    )
    (tmp / "data.txt").write_text("x")
    (tmp / "empty.jsonl").write_text("\n")
    (tmp / "badline.jsonl").write_text(good + "\n{oops\n")
    return {
        "not gzip": (tmp / "plain.json.gz", "Not a gzipped file"),
        "truncated gzip": (tmp / "trunc.json.gz", "Compressed file ended"),
        "invalid JSON": (tmp / "broken.json", "cannot be read as .json data"),
        "JSON lines named .json": (tmp / "records.json", "cannot be read as .json data"),
        "no data field": (tmp / "nodata.json", "no top-level field 'data'"),
        "missing question": (_write_json(tmp / "missing.json", missing), "data[0].paragraphs[0].qas[1], id 'q2': empty question"),
        "missing context": (
            _write_json(tmp / "noctx.json", no_context),
            "not in the squad layout (KeyError: 'context')",
        ),
        "string offset": (_write_json(tmp / "type.json", string_start), "Could not convert '12'"),
        "corrupt parquet": (tmp / "junk.parquet", "Parquet magic bytes not found"),
        "missing column": (tmp / "flat.parquet", "['question'] not in the dataset"),
        "unsupported suffix": (tmp / "data.txt", "unsupported file type '.txt'"),
        "empty": (tmp / "empty.jsonl", "no rows"),
        "bad line": (tmp / "badline.jsonl", "cannot be read as .jsonl data"),
        "no file": (tmp / "nope.json.gz", "file not found"),
    }


def test_bad_files_fail_with_one_line_naming_file_and_problem(tmp_path: Path) -> None:
    for name, (path, needle) in _bad_files(tmp_path).items():
        with pytest.raises(DataError) as err:
            _read(path)
        msg = str(err.value)
        assert str(path) in msg and needle in msg and "\n" not in msg, (name, msg)


def test_offsets_are_reported_never_repaired(tmp_path: Path) -> None:
    doc = _doc()
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 11
    with pytest.raises(DataError, match=r"offset\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\], id 'q1': answers\[0\]: "
                                        r"answer_start 11 does not match .*'France'.*' Franc'"):  # fmt: skip
        _read(_write_json(tmp_path / "offset.json", doc))
    doc = _doc()
    doc["data"][0]["paragraphs"][0]["qas"][1]["id"] = "q1"
    with pytest.raises(DataError, match=r"dup\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\]: duplicate id 'q1'"):
        _read(_write_json(tmp_path / "dup.json", doc))


def test_a_file_that_fails_its_checks_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    doc = _doc()
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 11
    bad = _write_json(tmp_path / "offset.json", doc)
    for _ in range(2):  # the second time: no parse of the bad file was kept to be reused
        with pytest.raises(DataError, match="does not match"):
            _read(bad, cache_dir=str(tmp_path / "cache"))
        assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(_read(_write_json(tmp_path / "good.json", _doc()), cache_dir=str(tmp_path / "cache"))) == 2


def test_unanswerable_questions(tmp_path: Path) -> None:
    p = _write_json(tmp_path / "noans.json", _doc(qas=[{"id": "u", "question": "Why?", "answers": []}]))
    assert _read(p)["is_impossible"] == [False]  # allowed unless required
    with pytest.raises(DataError, match="'u'.*no answers.*data=squad_v2"):
        _read(p, require_answers=True)
    v2 = _write_json(
        tmp_path / "v2.json", _doc(qas=[{"id": "v2", "question": "Why?", "answers": [], "is_impossible": True}])
    )
    assert _read(v2)["is_impossible"] == [True]
    with pytest.raises(DataError, match="'v2'.*is_impossible is true.*data=squad_v2"):
        _read(v2, require_answers=True)
    both = [{"id": "x", "question": "Why?", "is_impossible": True, "answers": [{"text": "Paris", "answer_start": 0}]}]
    with pytest.raises(DataError, match="'x'.*is_impossible is true but 1 answer"):
        _read(_write_json(tmp_path / "incons.json", _doc(qas=both)))


def test_errors_are_skim_errors() -> None:
    assert issubclass(DataError, SkimError) and issubclass(ConfigError, SkimError)


def test_folders_and_split_specs(tmp_path: Path) -> None:
    paths = write_synthetic_squad(tmp_path, train_size=30, val_size=10, seed=3)
    assert _read(tmp_path, split="validation")["id"] == _read(paths["validation"])["id"]
    assert _read(tmp_path, split="train").num_rows == 30
    assert _read(tmp_path, split="train[:10%]").num_rows == 3
    assert _read(tmp_path, split="train[:5]+validation[-2:]").num_rows == 7
    with pytest.raises(DataError, match="no file for split 'test'"):
        _read(tmp_path, split="test")
    with pytest.raises(ConfigError, match=r"split 'train\[:x\]': invalid split specification"):
        _read(tmp_path, split="train[:x]")
    # a single file is one split: slicing works, mixing split names does not
    assert _read(paths["train"], split="train[-4:]")["id"] == _read(paths["train"])["id"][-4:]
    with pytest.raises(ConfigError, match="single file"):
        _read(paths["train"], split="train+validation")


def _jsonl(path: Path, ids: list[str], bad: str = "") -> Path:
    rows = [{"id": i, "context": "abc", "question": "" if i == bad else "q", "answers": {"text": ["a"], "answer_start": [0]}}
            for i in ids]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_folder_names_the_file_of_the_split(tmp_path: Path) -> None:
    # one file per split: the message names the file and its own row, whichever splits the spec combines
    _jsonl(tmp_path / "train.jsonl", ["t0", "t1", "t2"])
    dev = _jsonl(tmp_path / "dev.jsonl", ["d0", "d1", "d2"], bad="d2")
    for split in ("validation", "train[:2]+validation[1:]", "train+validation[-1:]"):
        with pytest.raises(DataError, match=f"^{re.escape(str(dev))}: row 2 \\(line 3\\), id 'd2': empty question$"):
            _read(tmp_path, split=split)
    # a split of several files: the row of the split, counted across its files in order
    shards = tmp_path / "shards"
    shards.mkdir()
    _jsonl(shards / "train-00000-of-00002.jsonl", ["a0", "a1"])
    _jsonl(shards / "train-00001-of-00002.jsonl", ["b0", "b1"], bad="b1")
    with pytest.raises(DataError, match=f"^{re.escape(str(shards))} split 'train': row 3, id 'b1': empty question$"):
        _read(shards, split="train[1:]")


def test_editing_a_file_changes_its_fingerprint(tmp_path: Path) -> None:
    p = _write_json(tmp_path / "f.json", _doc())
    first = _read(p, cache_dir=str(tmp_path / "cache"))
    assert _read(p, cache_dir=str(tmp_path / "cache"))._fingerprint == first._fingerprint
    _write_json(p, _doc(context="Paris is in France!"))
    assert _read(p, cache_dir=str(tmp_path / "cache"))._fingerprint != first._fingerprint


# --------------------------------------------------------------------------- the Hub


def test_hub_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'squad' on the Hub\n(offline)")

    monkeypatch.setattr(sources.datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        _read(None, hub_name="squad", option="data.train_file")
    msg = str(err.value)
    assert "'squad'" in msg and "data.train_file" in msg and "Couldn't reach" in msg and "\n" not in msg
    with pytest.raises(ConfigError):
        _read(None)


def test_hub_rows_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = datasets.Dataset.from_dict({"id": ["a", "b"], "title": ["t", "t"], "context": ["abc", "abc"], "question": ["q", "q"],
                                       "answers": [{"text": ["a"], "answer_start": [0]}, {"text": [], "answer_start": []}]})  # fmt: skip
    calls: list[tuple[Any, ...]] = []

    def fake_load(name: str, config: str | None = None, *, split: str, cache_dir: str | None = None) -> Any:
        calls.append((name, config, split, cache_dir))
        return rows

    monkeypatch.setattr(sources.datasets, "load_dataset", fake_load)
    v2 = _read(None, hub_name="rajpurkar/squad_v2", split="validation", cache_dir="/tmp/c")
    assert calls[-1] == ("rajpurkar/squad_v2", None, "validation", "/tmp/c")
    # the Hub's squad_v2 has no is_impossible column: no answers is what marks a question unanswerable
    assert v2.features == QA_FEATURES and v2["is_impossible"] == [False, False] and v2["answers"][1]["text"] == []
    rows = rows.map(lambda r: {"question": "" if r["id"] == "b" else r["question"]})
    with pytest.raises(DataError, match=r"^Hub dataset 'rajpurkar/squad_v2' split 'validation': row 1, id 'b': empty question$"):
        _read(None, hub_name="rajpurkar/squad_v2", split="validation[1:]")


# --------------------------------------------------------------------------- synthetic


FACT_RE = re.compile(r"the (\w+) of the (\w+) (\w+) is ([a-z ]+?) \.")


def _questions(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["context"], qa) for art in doc["data"] for p in art["paragraphs"] for qa in p["qas"]]


def test_synthetic_deterministic() -> None:
    a = make_synthetic_squad(200, seed=7)
    assert a == make_synthetic_squad(200, seed=7)
    assert synthetic_json_bytes(a) == synthetic_json_bytes(make_synthetic_squad(200, seed=7))
    assert a != make_synthetic_squad(200, seed=8)


@pytest.mark.parametrize(("n_facts", "short_fraction"), [((1, 1), 0.0), ((3, 5), 0.0), ((3, 5), 0.3)])
def test_synthetic_content(n_facts: tuple[int, int], short_fraction: float) -> None:
    doc = make_synthetic_squad(300, seed=11, short_fraction=short_fraction, n_facts=n_facts)
    assert doc["version"] == "synthetic-1.0"
    qs = _questions(doc)
    assert len(qs) == 300
    assert len({qa["id"] for _, qa in qs}) == 300 and qs[0][1]["id"] == "syn-11-0"
    paragraphs = doc["data"][0]["paragraphs"]
    assert all(1 <= len(p["qas"]) <= min(2, n_facts[1]) for p in paragraphs)
    n_short = 0
    for p in paragraphs:
        n_words = len(p["context"].split())  # every word is one WordPiece token by construction
        if n_words < 150:  # short warm-up context (train only)
            assert 30 <= n_words <= 95, n_words
            n_short += 1
        else:
            assert n_words <= 270, n_words
        facts = FACT_RE.findall(p["context"])
        assert n_facts[0] <= len(facts) <= n_facts[1]
        assert len({f[0] for f in facts}) == len(facts)  # distinct attributes
        assert len({f[2] for f in facts}) == len(facts)  # distinct keys
    assert abs(n_short / len(paragraphs) - short_fraction) < 0.1
    for context, qa in qs:
        (ans,) = qa["answers"]
        text, start = ans["text"], ans["answer_start"]
        assert context[start : start + len(text)] == text
        assert 1 <= len(text.split()) <= 2
        m = re.fullmatch(r"what is the (\w+) of (the \w+ \w+) \?", qa["question"])
        assert m, qa["question"]
        fact = f"the {m.group(1)} of {m.group(2)} is {text} ."
        assert context.count(fact) == 1 and context.index(fact) + len(fact) - len(text) - 2 == start


def test_synthetic_write_split_and_read(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"train_size": 120, "val_size": 40, "seed": 5, "train_short_fraction": 0.3}
    paths = write_synthetic_squad(tmp_path, **kw)
    assert paths["train"].name == "train.json" and paths["validation"].name == "dev.json"
    train = _read(paths["train"], require_answers=True)
    dev = _read(paths["validation"], require_answers=True)
    assert (train.num_rows, dev.num_rows) == (120, 40)
    assert not set(train["context"]) & set(dev["context"])
    assert min(len(c.split()) for c in train["context"]) < 100  # warm-up contexts in train
    assert min(len(c.split()) for c in dev["context"]) >= 150  # dev: long contexts only
    assert not set(train["id"]) & set(dev["id"])
    # Idempotent: identical content is not rewritten (mtime-based cache keys stay valid).
    before = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    again = write_synthetic_squad(tmp_path, **kw)
    assert again == paths and {k: p.stat().st_mtime_ns for k, p in again.items()} == before
    # Byte-identical across output directories.
    other = write_synthetic_squad(tmp_path / "other", **kw)
    assert other["train"].read_bytes() == paths["train"].read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_synthetic_sentiment_is_deterministic_and_balanced(tmp_path):
    from skim.data.cls_sources import load_cls
    from skim.data.synthetic import make_synthetic_sentiment, write_synthetic_sentiment

    a = make_synthetic_sentiment(200, seed=3)
    assert a == make_synthetic_sentiment(200, seed=3)
    labels = [r["label"] for r in a]
    assert 60 < sum(labels) < 140
    paths = write_synthetic_sentiment(tmp_path, train_size=50, val_size=20)
    ds = load_cls(
        str(paths["validation"]),
        split="validation",
        columns={"text": "text", "label": "label"},
        label_names=["negative", "positive"],
        hub_name=None,
    )
    assert len(ds) == 20 and set(ds["label"]) <= {0, 1}
