"""Tests for skim.data.squad_io (SQuAD loading/validation) and skim.data.synthetic."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skim.data import squad_io
from skim.data.squad_io import (
    SQUAD_COLUMNS,
    SQUAD_FEATURES,
    dataset_fingerprint_of_file,
    load_squad,
    read_squad_file,
)
from skim.data.synthetic import make_synthetic_squad, synthetic_json_bytes, write_synthetic_squad
from skim.errors import ConfigError, DataError, SkimError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"../shared/data not found: {path}")
    return path


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def dev_v11() -> datasets.Dataset:
    return read_squad_file(_shared("squad_v1.1/dev-v1.1.json.gz"))


def test_real_dev_v11_json_gz(dev_v11: datasets.Dataset) -> None:
    assert dev_v11.num_rows == 10570
    assert tuple(dev_v11.column_names) == SQUAD_COLUMNS
    assert dev_v11.features == SQUAD_FEATURES
    assert len(set(dev_v11["id"])) == 10570
    assert not any(dev_v11["is_impossible"])
    row = dev_v11[0]
    assert row["id"] == "56be4db0acb8001400a502ec"
    assert row["answers"]["text"][0] == "Denver Broncos"
    start = row["answers"]["answer_start"][0]
    assert row["context"][start : start + len("Denver Broncos")] == "Denver Broncos"


def test_real_parquet_matches_json_gz(dev_v11: datasets.Dataset) -> None:
    pq_ds = read_squad_file(_shared("squad_v1.1/validation-00000-of-00001.parquet"))
    assert pq_ds.features == SQUAD_FEATURES
    assert pq_ds["id"] == dev_v11["id"]
    assert list(pq_ds["answers"]) == list(dev_v11["answers"])
    assert pq_ds["context"] == dev_v11["context"]
    assert pq_ds["question"] == dev_v11["question"]


def test_real_dev_v2() -> None:
    ds = read_squad_file(_shared("squad_v2.0/dev-v2.0.reconstructed.json.gz"))
    assert ds.num_rows == 11873
    flags = ds["is_impossible"]
    assert sum(flags) == 5945
    # Unanswerable <=> no answers.
    assert all(imp == (len(a["text"]) == 0) for imp, a in zip(flags, ds["answers"]))


def test_real_directory_source_ambiguity_and_file_choice() -> None:
    d = _shared("squad_v1.1")
    # dev-v1.1.json.gz and validation-*.parquet both match "validation": refuse to guess.
    with pytest.raises(DataError, match="2 files match split 'validation'"):
        load_squad(d, hub_name=None, split="validation")
    ds = load_squad(d / "dev-v1.1.json.gz", hub_name="squad", split="validation[:100]")
    assert ds.num_rows == 100


# --------------------------------------------------------------------------- helpers for bad input


def _squad_doc(qas: list[dict[str, Any]] | None = None, context: str = "Paris is in France.") -> dict[str, Any]:
    if qas is None:
        qas = [
            {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
            {"id": "q2", "question": "What is in France?", "answers": [{"text": "Paris", "answer_start": 0}]},
        ]
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def _write_json(path: Path, obj: Any, gz: bool = False) -> Path:
    data = json.dumps(obj).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _raises(path: Path, *needles: str, **kw: Any) -> str:
    with pytest.raises(DataError) as info:
        read_squad_file(path, **kw)
    msg = str(info.value)
    assert path.name in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    assert "\n" not in msg
    return msg


def test_valid_small_files_all_formats(tmp_path: Path) -> None:
    doc = _squad_doc()
    for name, gz in (("a.json", False), ("a.json.gz", True)):
        ds = read_squad_file(_write_json(tmp_path / name, doc, gz))
        assert ds["id"] == ["q1", "q2"] and ds["title"] == ["T", "T"]
    flat = [
        {"id": "q1", "title": "T", "context": "Paris is in France.", "question": "Where?",
         "answers": {"text": ["France"], "answer_start": [12]}},
        {"id": "q2", "context": "No answer here.", "question": "Why?", "is_impossible": True,
         "answers": {"text": [], "answer_start": []}},
    ]
    lines = "\n".join(json.dumps(r) for r in flat) + "\n\n"
    (tmp_path / "a.jsonl").write_text(lines)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    for name in ("a.jsonl", "a.jsonl.gz"):
        ds = read_squad_file(tmp_path / name)
        assert ds["is_impossible"] == [False, True]
        assert ds["title"] == ["T", ""]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "a.parquet")
    ds = read_squad_file(tmp_path / "a.parquet")
    assert ds.features == SQUAD_FEATURES and ds["answers"][1] == {"text": [], "answer_start": []}


def test_missing_file(tmp_path: Path) -> None:
    _raises(tmp_path / "nope.json.gz", "not found")
    with pytest.raises(DataError, match="not found"):
        load_squad(tmp_path / "nope.json", hub_name="squad", split="train")


def test_not_gzip(tmp_path: Path) -> None:
    p = tmp_path / "plain.json.gz"
    p.write_text(json.dumps(_squad_doc()))
    _raises(p, "not a gzip file")


def test_truncated_gzip(tmp_path: Path) -> None:
    p = tmp_path / "trunc.json.gz"
    p.write_bytes(gzip.compress(json.dumps(_squad_doc()).encode())[:30])
    _raises(p, "gzip")


def test_gzip_content_with_plain_suffix(tmp_path: Path) -> None:
    _raises(_write_json(tmp_path / "packed.json", _squad_doc(), gz=True), "gzip-compressed", ".json.gz")


def test_invalid_json(tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text('{"version": "1.1",\n "data": [ {"title": "x",, } ]}')
    _raises(p, "invalid JSON", "line 2 column")


def test_json_lines_with_json_suffix_hints_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "records.json"
    p.write_text('{"id": "a"}\n{"id": "b"}\n')
    _raises(p, "invalid JSON", ".jsonl")


@pytest.mark.parametrize("obj", [[1, 2], {"version": "1.1"}, {"data": {"title": "x"}}])
def test_not_squad_shaped(tmp_path: Path, obj: Any) -> None:
    _raises(_write_json(tmp_path / "shape.json", obj), "not SQuAD-shaped", "'data'")


def test_missing_field(tmp_path: Path) -> None:
    doc = _squad_doc()
    del doc["data"][0]["paragraphs"][0]["qas"][1]["question"]
    _raises(_write_json(tmp_path / "missing.json", doc), "data[0].paragraphs[0].qas[1]: missing field 'question'")
    doc = _squad_doc()
    del doc["data"][0]["paragraphs"][0]["context"]
    _raises(_write_json(tmp_path / "noctx.json", doc), "data[0].paragraphs[0]: missing field 'context'")


def test_wrong_type(tmp_path: Path) -> None:
    doc = _squad_doc()
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = "12"
    _raises(_write_json(tmp_path / "type.json", doc), "qas[0].answers[0].answer_start", "expected integer, got string")
    doc = _squad_doc()
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = True  # bool is not an offset
    _raises(_write_json(tmp_path / "bool.json", doc), "answer_start", "got boolean")


def test_bad_answer_offset(tmp_path: Path) -> None:
    doc = _squad_doc()
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 11
    p = _write_json(tmp_path / "offset.json", doc)
    msg = _raises(p, "'q1'", "answer_start 11", "'France'", "' Franc'")
    assert "does not match the context" in msg
    # Opt-out exists for callers that re-align offsets themselves; never a silent fix.
    assert read_squad_file(p, check_offsets=False)["answers"][0]["answer_start"] == [11]
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 500
    _raises(_write_json(tmp_path / "offset2.json", doc), "answer_start 500", "context has ''")


def test_unsupported_suffix(tmp_path: Path) -> None:
    p = tmp_path / "data.csv"
    p.write_text("id,context\n")
    _raises(p, "unsupported file type '.csv'", ".json.gz", ".parquet", ".jsonl")


def test_parquet_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "flat.parquet"
    pq.write_table(pa.table({"id": ["a"], "context": ["c"], "answers": [{"text": ["c"], "answer_start": [0]}]}), p)
    _raises(p, "missing required column(s) 'question'")


def test_parquet_bad_row(tmp_path: Path) -> None:
    p = tmp_path / "rows.parquet"
    rows = [
        {"id": "ok", "context": "abc", "question": "q", "answers": {"text": ["a"], "answer_start": [0]}},
        {"id": "bad", "context": "abc", "question": "q", "answers": {"text": ["a"], "answer_start": [2]}},
    ]
    pq.write_table(pa.Table.from_pylist(rows), p)
    _raises(p, "row 1", "'bad'", "answer_start 2")


def test_corrupt_parquet(tmp_path: Path) -> None:
    p = tmp_path / "junk.parquet"
    p.write_bytes(b"not parquet at all")
    _raises(p, "cannot read parquet file")


def test_jsonl_length_mismatch_and_row_index(tmp_path: Path) -> None:
    good = {"id": "a", "context": "abc", "question": "q", "answers": {"text": ["a"], "answer_start": [0]}}
    bad = {"id": "b", "context": "abc", "question": "q", "answers": {"text": ["a", "b"], "answer_start": [0]}}
    p = tmp_path / "mm.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    _raises(p, "row 1 (line 2)", "'b'", "'text' has 2 entries but 'answer_start' has 1")
    p2 = tmp_path / "miss.jsonl"
    p2.write_text(json.dumps({k: v for k, v in good.items() if k != "question"}) + "\n")
    _raises(p2, "row 0 (line 1): missing field 'question'")
    p3 = tmp_path / "badline.jsonl"
    p3.write_text(json.dumps(good) + "\n{oops\n")
    _raises(p3, "invalid JSON in row 1 (line 2)")


def test_empty_dataset(tmp_path: Path) -> None:
    _raises(_write_json(tmp_path / "empty.json", {"version": "1.1", "data": []}), "no questions")
    (tmp_path / "empty.jsonl").write_text("\n")
    _raises(tmp_path / "empty.jsonl", "no questions")


def test_duplicate_ids(tmp_path: Path) -> None:
    doc = _squad_doc()
    doc["data"][0]["paragraphs"][0]["qas"][1]["id"] = "q1"
    _raises(_write_json(tmp_path / "dup.json", doc), "duplicate id 'q1'", "qas[0]")


def test_unanswerable_handling(tmp_path: Path) -> None:
    doc = _squad_doc(qas=[{"id": "u", "question": "Why?", "answers": []}])
    p = _write_json(tmp_path / "noans.json", doc)
    assert read_squad_file(p)["is_impossible"] == [False]  # allowed unless required
    _raises(p, "'u'", "no answers", "data=squad_v2", require_answers=True)
    doc = _squad_doc(qas=[{"id": "v2", "question": "Why?", "answers": [], "is_impossible": True}])
    v2 = _write_json(tmp_path / "v2.json", doc)
    assert read_squad_file(v2)["is_impossible"] == [True]
    # SQuAD v1.1 scores every question against its answers: unanswerable ones are refused, flagged or not
    _raises(v2, "'v2'", "is_impossible is true", "data=squad_v2", require_answers=True)
    doc = _squad_doc(
        qas=[{"id": "x", "question": "Why?", "is_impossible": True, "answers": [{"text": "Paris", "answer_start": 0}]}]
    )
    _raises(_write_json(tmp_path / "incons.json", doc), "'x'", "is_impossible is true")


def test_errors_are_skim_errors() -> None:
    assert issubclass(DataError, SkimError) and issubclass(ConfigError, SkimError)


# --------------------------------------------------------------------------- load_squad


def test_load_squad_directory_and_split_spec(tmp_path: Path) -> None:
    paths = write_synthetic_squad(tmp_path, train_size=30, val_size=10, seed=3)
    assert set(paths) == {"train", "validation"}
    assert load_squad(tmp_path, hub_name=None, split="validation")["id"] == read_squad_file(paths["validation"])["id"]
    assert load_squad(tmp_path, hub_name=None, split="train").num_rows == 30
    assert load_squad(tmp_path, hub_name=None, split="train[:10%]").num_rows == 3
    assert load_squad(tmp_path, hub_name=None, split="train[:5]+validation[-2:]").num_rows == 7
    with pytest.raises(DataError, match="no file for split 'test'"):
        load_squad(tmp_path, hub_name=None, split="test")
    with pytest.raises(ConfigError, match="split 'train\\[:x\\]'"):
        load_squad(tmp_path, hub_name=None, split="train[:x]")
    # A single file is one split: slicing works, mixing split names does not.
    assert load_squad(paths["train"], hub_name=None, split="train[-4:]")["id"] == read_squad_file(paths["train"])["id"][-4:]
    with pytest.raises(ConfigError, match="single file"):
        load_squad(paths["train"], hub_name=None, split="train+validation")


def test_load_squad_hub_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'squad' on the Hub\n(offline)")

    monkeypatch.setattr(squad_io.datasets, "load_dataset", boom)
    with pytest.raises(DataError) as info:
        load_squad(None, hub_name="squad", split="train", source_option="data.train_file")
    msg = str(info.value)
    assert "'squad'" in msg and "data.train_file" in msg and "Couldn't reach" in msg and "\n" not in msg
    with pytest.raises(ConfigError):
        load_squad(None, hub_name=None, split="train")


def test_load_squad_hub_normalisation(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = datasets.Dataset.from_dict(
        {
            "id": ["a", "b"],
            "title": ["t", "t"],
            "context": ["abc", "abc"],
            "question": ["q", "q"],
            "answers": [{"text": ["a"], "answer_start": [0]}, {"text": [], "answer_start": []}],
        }
    )
    calls: list[tuple[Any, ...]] = []

    def fake_load(name: str, config: str | None = None, *, split: str, cache_dir: str | None = None) -> Any:
        calls.append((name, config, split, cache_dir))
        return fake

    monkeypatch.setattr(squad_io.datasets, "load_dataset", fake_load)
    v2 = load_squad(None, hub_name="rajpurkar/squad_v2", split="validation", cache_dir="/tmp/c")
    assert calls[-1] == ("rajpurkar/squad_v2", None, "validation", "/tmp/c")
    assert tuple(v2.column_names) == SQUAD_COLUMNS and v2.features == SQUAD_FEATURES
    assert v2["is_impossible"] == [False, True]
    v1 = load_squad(None, hub_name="squad", split="validation")
    assert v1["is_impossible"] == [False, False]


# --------------------------------------------------------------------------- fingerprint


def test_dataset_fingerprint_of_file(tmp_path: Path) -> None:
    p = _write_json(tmp_path / "f.json", _squad_doc())
    fp = dataset_fingerprint_of_file(p)
    assert fp == dataset_fingerprint_of_file(str(p)) and re.fullmatch(r"[0-9a-f]{16}", fp)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert dataset_fingerprint_of_file(p) != fp
    # Same file => same dataset fingerprint, so downstream .map caches are reusable.
    assert read_squad_file(p)._fingerprint == read_squad_file(p)._fingerprint
    with pytest.raises(DataError, match="not found"):
        dataset_fingerprint_of_file(tmp_path / "missing.json")


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
    train = read_squad_file(paths["train"], check_offsets=True, require_answers=True)
    dev = read_squad_file(paths["validation"], check_offsets=True, require_answers=True)
    assert (train.num_rows, dev.num_rows) == (120, 40)
    assert not set(train["context"]) & set(dev["context"])
    assert min(len(c.split()) for c in train["context"]) < 100  # warm-up contexts in train
    assert min(len(c.split()) for c in dev["context"]) >= 150  # dev: long contexts only
    assert not set(train["id"]) & set(dev["id"])
    # Idempotent: identical content is not rewritten (mtime-based cache keys stay valid).
    before = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    fp = dataset_fingerprint_of_file(paths["train"])
    again = write_synthetic_squad(tmp_path, **kw)
    assert again == paths and {k: p.stat().st_mtime_ns for k, p in again.items()} == before
    assert dataset_fingerprint_of_file(paths["train"]) == fp
    # Byte-identical across output directories.
    other = write_synthetic_squad(tmp_path / "other", **kw)
    assert other["train"].read_bytes() == paths["train"].read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_synthetic_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from skim.data.synthetic import main

    assert main([str(tmp_path), "--train-size", "20", "--val-size", "5", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "train.json (20 questions" in out and "dev.json (5 questions" in out


def test_synthetic_sentiment_is_deterministic_and_balanced(tmp_path):
    from skim.data.cls_io import TASKS, read_cls_file
    from skim.data.synthetic import make_synthetic_sentiment, write_synthetic_sentiment

    a = make_synthetic_sentiment(200, seed=3)
    assert a == make_synthetic_sentiment(200, seed=3)
    labels = [r["label"] for r in a]
    assert 60 < sum(labels) < 140
    paths = write_synthetic_sentiment(tmp_path, train_size=50, val_size=20)
    ds = read_cls_file(paths["validation"], spec=TASKS["synthetic_sentiment"])
    assert len(ds) == 20 and set(ds["label"]) <= {0, 1}
