"""Data that cannot be scored as configured, and data options of the wrong type, fail with one clear line before any
tokenisation; Hub failures point offline users at the local configs; sample limits cut the data before tokenising."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from skim.data import sources
from skim.data.cls_datamodule import ClassificationDataModule
from skim.data.qa_datamodule import QADataModule
from skim.data.qa_sources import load_qa
from skim.errors import ConfigError, DataError
from tests.conftest import ROOT, SHARED_DATA, require_shared
from tests.helpers.runs import compose_cfg, run_cli

CONTEXT = "Paris is the capital of France."
GOOD = {"id": "good-1", "question": "What is the capital?", "context": CONTEXT,
        "answers": {"text": ["Paris"], "answer_start": [0]}}  # fmt: skip


def _bad(**changes: Any) -> dict[str, Any]:
    return {**GOOD, "id": "bad-7", **changes}


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    """The records in the layout the suffix names: official nested JSON, JSONL or parquet."""
    if path.suffix == ".parquet":
        keys = dict.fromkeys(k for r in records for k in r)  # from_pylist takes its columns from the first row
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records]), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        paragraphs = []
        for r in records:
            qa = {"id": r["id"], "question": r["question"],
                  "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}  # fmt: skip
            if "is_impossible" in r:
                qa["is_impossible"] = r["is_impossible"]
            paragraphs.append({"context": r["context"], "qas": [qa]})
        path.write_text(json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": paragraphs}]}))
    return path


NO_ANSWER = {"text": [], "answer_start": []}
V1_PROBLEMS = {
    "no_answers": ([_bad(answers=NO_ANSWER)], "question has no answers"),
    "is_impossible": ([_bad(answers=NO_ANSWER, is_impossible=True)], "is_impossible is true"),
}
PROBLEMS = {
    "duplicate_id": ([_bad(), _bad()], "duplicate id 'bad-7'"),
    "empty_answer": ([_bad(answers={"text": ["  "], "answer_start": [0]})], "empty answer text"),
    "start_outside": ([_bad(answers={"text": ["Paris"], "answer_start": [500]})], "answer_start 500"),
    "start_mismatch": ([_bad(answers={"text": ["Paris"], "answer_start": [3]})], "does not match the context"),
    "empty_question": ([_bad(question=" ")], "empty question"),
    "empty_context": ([_bad(context="  ")], "empty context"),
}
LAYOUTS = ("nested.json", "flat.jsonl", "flat.parquet")


def at(layout: str, n: int) -> str:
    """Where :func:`_write` put record ``n``: its row (and line) in the file, or its path in the nested JSON."""
    return {"nested.json": f"data[0].paragraphs[{n}].qas[0]", "flat.jsonl": f"row {n} (line {n + 1})"}.get(layout, f"row {n}")


def read_squad_file(path: Path, require_answers: bool = False, split: str = "train") -> datasets.Dataset:
    return load_qa(str(path), layout="squad", split=split, require_answers=require_answers, hub_name=None)


def _one_line_error(path: Path, **kw: Any) -> str:
    with pytest.raises(DataError) as err:
        read_squad_file(path, **kw)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


# ------------------------------------------------------------------------------------ SQuAD v1.1 consistency


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("problem", list(V1_PROBLEMS))
def test_v1_refuses_questions_without_an_answer(tmp_path, layout, problem):
    records, needle = V1_PROBLEMS[problem]
    path = _write(tmp_path / layout, [GOOD, *records])
    assert read_squad_file(path)["id"] == ["good-1", "bad-7"]  # v2 data: accepted
    msg = _one_line_error(path, require_answers=True)
    assert msg.startswith(f"{path}: {at(layout, 1)}, id 'bad-7': ") and needle in msg and "data=squad_v2" in msg, msg


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_inconsistent_rows_name_file_id_and_problem(tmp_path, layout, problem):
    records, needle = PROBLEMS[problem]
    path = _write(tmp_path / layout, [GOOD, *records])
    msg = _one_line_error(path)
    # the last record is at fault (of a duplicated id, the second question)
    assert msg.startswith(f"{path}: {at(layout, len(records))}") and "'bad-7'" in msg and needle in msg, msg


@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_id_is_refused(tmp_path, layout):
    path = _write(tmp_path / layout, [GOOD, _bad(id=" ")])
    msg = _one_line_error(path)
    assert msg.startswith(f"{path}: {at(layout, 1)}: empty id"), msg


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_slice_reports_the_row_of_the_file(tmp_path, layout):
    # slices count questions; a message counts the file's own rows, and a JSONL's lines with its blank ones
    path = _write(tmp_path / layout, [{**GOOD, "id": f"good-{i}"} for i in range(4)] + [_bad(question=" ")])
    where = at(layout, 4)
    if layout.endswith(".jsonl"):  # a blank line first, a line of spaces after the first record: row 4 is on line 7
        path.write_text("\n" + path.read_text().replace("\n", "\n  \n", 1))
        where = "row 4 (line 7)"
    for split in ("train", "train[3:]", "train[-1:]"):
        assert _one_line_error(path, split=split).startswith(f"{path}: {where}, id 'bad-7': empty question"), split


def test_real_v11_files_pass_the_v1_checks():
    folder = require_shared(SHARED_DATA / "squad_v1.1")
    dev = read_squad_file(folder / "dev-v1.1.json.gz", require_answers=True)
    assert len(dev) == 10570
    assert read_squad_file(folder / "validation-00000-of-00001.parquet", require_answers=True)["id"] == dev["id"]
    # no wall-clock bound here: CI's machine ran this in 11 s on a slow day (2 s on a normal one)
    assert len(read_squad_file(folder / "train-v1.1.reconstructed.json.gz", require_answers=True)) == 87599


@pytest.mark.parametrize("role", ["train_file", "validation_file"])
def test_v1_datamodule_refuses_unanswerable_file_before_tokenising(tmp_path, role):
    good = _write(tmp_path / "good.json", [GOOD])
    bad = _write(tmp_path / "unanswerable.json", [GOOD, _bad(answers=NO_ANSWER)])
    files = {"train_file": str(good), "validation_file": str(good), role: str(bad)}
    dm = QADataModule(tokenizer="unused", hub_name=None, cache_dir=str(tmp_path / "cache"), **files)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "unanswerable.json" in msg and "'bad-7'" in msg and "data=squad_v2" in msg, msg
    # nothing was tokenised (the validation file is read before the training file is tokenised), and what datasets
    # wrote while reading the bad file is gone: what is left is the good training file's parse, read first
    assert dm._tokenizer is None
    assert len(list((tmp_path / "cache").glob("json/default-*"))) == (1 if role == "validation_file" else 0)


def test_v2_split_monitor_needs_questions_of_its_kind_before_training(minilm_path, tmp_path):
    # val/NoAns_* is logged only if the evaluation holds an unanswerable question: the checkpoint callback used to stop
    # the run with a traceback after its first epoch
    path = _write(tmp_path / "answerable.jsonl", [GOOD])
    options = {"tokenizer": minilm_path, "name": "squad_v2", "hub_name": None, "version_2_with_negative": True,
               "train_file": str(path), "validation_file": str(path), "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    QADataModule(monitor="val/HasAns_f1", **options).setup("fit")
    dm = QADataModule(monitor="val/NoAns_f1", **options)
    dm.setup("validate")  # evaluation does not monitor
    with pytest.raises(ConfigError) as err:
        dm.setup("fit")
    assert str(err.value) == "data.monitor='val/NoAns_f1': none of the 1 evaluation questions is unanswerable; monitor val/f1"


def test_cache_dir_that_is_a_file_is_one_config_error(tmp_path):
    # datasets failed inside the first load, and the message blamed the data file
    (tmp_path / "cache").write_text("")
    for cache_dir in (tmp_path / "cache", tmp_path / "cache" / "below"):
        with pytest.raises(ConfigError) as err:
            QADataModule(tokenizer="unused", name="squad", cache_dir=str(cache_dir))
        assert str(err.value) == f"data.cache_dir={cache_dir}: {tmp_path / 'cache'} is a file, not a folder"


def test_v2_datamodule_accepts_unanswerable_questions(minilm_path, tmp_path):
    path = _write(tmp_path / "v2.jsonl", [GOOD, _bad(answers=NO_ANSWER, is_impossible=True)])
    dm = QADataModule(tokenizer=minilm_path, name="squad_v2", hub_name=None, version_2_with_negative=True,
                      train_file=str(path), validation_file=str(path), cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm.setup("fit")
    assert [ex["id"] for ex in dm.eval_examples] == ["good-1", "bad-7"]


# ------------------------------------------------------------------------------------ Hub data


def _fake_hub(monkeypatch, ds: datasets.Dataset) -> None:
    monkeypatch.setattr(sources.datasets, "load_dataset", lambda *a, **k: ds)


def load_squad(source: None, hub_name: str, split: str, require_answers: bool = False) -> datasets.Dataset:
    return load_qa(source, layout="squad", split=split, require_answers=require_answers, hub_name=hub_name)


def test_hub_v1_rows_are_checked(monkeypatch):
    answers = [{"text": ["a"], "answer_start": [0]}, {"text": [], "answer_start": []}]
    rows = {
        "id": ["a", "b"],
        "title": ["t", "t"],
        "context": ["abc", "abc"],
        "question": ["q", "q"],
        "answers": answers,
    }
    _fake_hub(monkeypatch, datasets.Dataset.from_dict(rows))
    assert load_squad(None, hub_name="squad_v2", split="validation")["id"] == ["a", "b"]
    with pytest.raises(DataError) as err:
        load_squad(None, hub_name="squad_v2", split="validation", require_answers=True)
    msg = str(err.value)
    assert "'squad_v2'" in msg and "id 'b'" in msg and "data=squad_v2" in msg and "\n" not in msg
    _fake_hub(monkeypatch, datasets.Dataset.from_dict({**rows, "id": ["a", "a"]}))
    with pytest.raises(DataError, match="duplicate id 'a'"):
        load_squad(None, hub_name="squad", split="validation")


def _offline(monkeypatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach the Hub (offline)")

    monkeypatch.setattr(datasets, "load_dataset", boom)


@pytest.mark.parametrize(("name", "local"), [("squad", "squad_local"), ("squad_v2", None)])
def test_qa_hub_failure_suggests_the_local_config(monkeypatch, tmp_path, name, local):
    _offline(monkeypatch)
    dm = QADataModule(tokenizer="unused", name=name, hub_name=name, cache_dir=str(tmp_path))
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "data.train_file" in msg and "Couldn't reach" in msg
    assert (f"use data={local} or set data.train_file" in msg) if local else "use data=" not in msg, msg


@pytest.mark.parametrize(("name", "local"), [("sst2", "sst2_local"), ("mnli", None)])
def test_cls_hub_failure_suggests_the_local_config(monkeypatch, tmp_path, name, local):
    _offline(monkeypatch)
    dm = ClassificationDataModule(tokenizer="unused", name=name, hub_name="glue", hub_config=name, cache_dir=str(tmp_path),
                                  columns={"text": "premise", "label": "label"}, label_names=["a", "b", "c"])  # fmt: skip
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "data.train_file" in msg
    assert (f"use data={local} or set data.train_file" in msg) if local else "use data=" not in msg, msg


# ------------------------------------------------------------------------------------ option types


BAD_OPTIONS = [
    ("batch_size", "abc", "data.batch_size must be an integer, got 'abc'"),
    ("max_seq_length", "abc", "data.max_seq_length must be an integer, got 'abc'"),
    ("max_train_samples", 1.5, "data.max_train_samples must be an integer or null, got 1.5"),
    ("group_by_length", "maybe", "data.group_by_length must be true or false, got 'maybe'"),
    ("eval_batch_size", True, "data.eval_batch_size must be an integer, got True"),
    ("max_eval_samples", 0, "data.max_eval_samples must be at least 1, got 0"),
    ("num_workers", -1, "data.num_workers must be at least 0, got -1"),
    ("transkimmer_coefficient", -5.0, "data.transkimmer_coefficient must be at least 0, got -5.0"),
    ("max_train_sample", 3, "unknown data option(s) 'max_train_sample'"),
]


@pytest.mark.parametrize(("option", "value", "message"), BAD_OPTIONS)
@pytest.mark.parametrize("module", [QADataModule, ClassificationDataModule])
def test_wrong_option_type_names_option_and_type(module, option, value, message):
    task = {"columns": {"text": "sentence", "label": "label"}, "label_names": ["negative", "positive"]}
    with pytest.raises(ConfigError) as err:
        module(
            tokenizer="unused", name="sst2", **(task if module is ClassificationDataModule else {}), **{option: value}
        )
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml")))
def test_every_data_config_passes_the_type_check(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SKIM_SHARED_DATA", str(SHARED_DATA))
    GlobalHydra.instance().clear()
    try:
        instantiate(compose_cfg(["model=tiny", f"data={name}"], output_dir=tmp_path).data)
    finally:
        GlobalHydra.instance().clear()


BAD_QA_OPTIONS = [
    # max_query_length 0 used to mean "no limit" silently (the last offset); a negative stride was an OverflowError
    ({"max_query_length": 0}, "data.max_query_length must be at least 1, got 0"),
    ({"doc_stride": -1}, "data.doc_stride must be at least 0, got -1"),
    # a QA monitor the task does not log stopped the run after its first epoch (the checkpoint callback's error)
    ({"monitor": "val/acc"}, "data.monitor='val/acc' is not a metric of data set sst2 (one of: val/f1, val/em, val/loss)"),
    # an option of another layout was ignored without a word
    ({"yes_no": "prepend"}, "data.yes_no='prepend' is read only with data.layout=hotpotqa, not with data.layout=squad"),
    ({"layout": "mrqa", "yes_no": "drop"}, "data.yes_no='drop' is read only with data.layout=hotpotqa, not with data.layout=mrqa"),
    ({"layout": "hotpotqa", "subset": "NewsQA"}, "data.subset='NewsQA' is read only with data.layout=mrqa, not with data.layout=hotpotqa"),
]
BAD_CLS_OPTIONS = [
    # each was a KeyError, IndexError, ValueError or AttributeError, or (label id -1) a crash in the loss
    ({"columns": {"text": None, "label": "label"}}, "data.columns must name distinct 'text' and 'label' columns"),
    ({"columns": {"text": "sentence", "label": "sentence"}}, "data.columns must name distinct 'text' and 'label' columns"),
    ({"label_names": ["negative"]}, "data.label_names needs at least 2 classes (none: a regression task), got ['negative']"),
    ({"label_names": [], "label_range": [0.0]}, "data.label_range must be [min, max] with min <= max, got [0.0]"),
    ({"label_names": [], "label_range": [5, 0]}, "data.label_range must be [min, max] with min <= max, got [5, 0]"),
    ({"table": {"label_values": {"0": "neg", "1": "pos"}}}, "data.table.label_values must map the files' labels to class ids 0..1"),
    ({"table": {"label_values": [0, 1]}}, "data.table.label_values must map the files' labels to class ids 0..1"),
    ({"table": {"label_values": {"0": -1, "1": 1}}}, "data.table.label_values must map the files' labels to class ids 0..1"),
]


CLS_TASK = {"columns": {"text": "sentence", "label": "label"}, "label_names": ["negative", "positive"]}


@pytest.mark.parametrize(("module", "task", "options", "message"), [(QADataModule, {}, *case) for case in BAD_QA_OPTIONS]
                         + [(ClassificationDataModule, CLS_TASK, *case) for case in BAD_CLS_OPTIONS])  # fmt: skip
def test_bad_task_options_are_one_config_error(module, task, options, message):
    with pytest.raises(ConfigError) as err:
        module(tokenizer="unused", name="sst2", **(task | options))
    assert str(err.value).startswith(message), str(err.value)


def test_doc_stride_beyond_the_room_of_a_window_is_one_config_error(minilm_path, squad_dev, tmp_path):
    # the tokenizer used to stop the run with a Rust panic (a BaseException, ~70 KB of backtrace) at the first context
    # that overflowed a window, so a small subset could pass and the full run die
    dm = QADataModule(tokenizer=minilm_path, name="squad", train_file=str(squad_dev), validation_file=str(squad_dev),
                      max_seq_length=128, doc_stride=120, max_train_samples=8, max_eval_samples=8, cache_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(ConfigError, match=r"^data\.doc_stride=120 must be smaller than the context tokens of a window: "
                       r"(\d+) = data\.max_seq_length=128 - a question of \d+ tokens \(data\.max_query_length=64\) - 3 special"):  # fmt: skip
        dm.setup("fit")
    assert not list(tmp_path.glob("**/tmp*"))


BAD_SYNTHETIC = [
    # n_facts [0, 0] and [9, 9] looped forever; [2, 1] was a bare ValueError from random
    ("n_facts=[0,0]", "data.synthetic: n_facts must be [min, max] with 1 <= min <= max <= 8, got [0, 0]"),
    ("n_facts=[9,9]", "data.synthetic: n_facts must be [min, max] with 1 <= min <= max <= 8, got [9, 9]"),
    ("n_facts=[2,1]", "data.synthetic: n_facts must be [min, max] with 1 <= min <= max <= 8, got [2, 1]"),
    ("val_size=0", "data.synthetic: train_size and val_size must be at least 1, got 3000 and 0"),
    ("+data.synthetic.colour=red", "data.synthetic: write_synthetic_squad() got an unexpected keyword argument 'colour'"),
    ("train_size=true", "data.synthetic.train_size must be an integer, got True (bool)"),  # was one example, silently
    ("n_facts=[1.5,2]", "data.synthetic: n_facts must be [min, max] with 1 <= min <= max <= 8, got [1.5, 2]"),
]


def _synthetic_cfg(tmp_path: Path, override: str):
    GlobalHydra.instance().clear()
    try:
        return compose_cfg(["model=tiny", "data=synthetic", f"paths.data_dir={tmp_path}", override], output_dir=tmp_path)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize(("override", "message"), BAD_SYNTHETIC, ids=[b[0] for b in BAD_SYNTHETIC])
def test_bad_synthetic_options_are_one_config_error_before_anything_is_written(override, message, tmp_path):
    cfg = _synthetic_cfg(tmp_path, override if override.startswith("+") else f"data.synthetic.{override}")
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.data).prepare_data()
    assert str(err.value) == message
    assert not (tmp_path / "synthetic").exists()


def test_synthetic_dir_that_cannot_be_made_is_one_config_error(tmp_path):
    (tmp_path / "a_file").write_text("")
    cfg = _synthetic_cfg(tmp_path, f"data.synthetic.dir={tmp_path}/a_file")
    with pytest.raises(ConfigError, match=rf"^data\.synthetic\.dir={tmp_path}/a_file: \[Errno 17\] File exists"):
        instantiate(cfg.data).prepare_data()


def test_cli_wrong_option_type_is_one_line_before_any_data(tmp_path):
    res = run_cli(["-m", "skim.train", "model=tiny", "data=squad_local", "data.batch_size=abc"], cwd=tmp_path,
                  env_extra={"SKIM_ROOT": str(tmp_path), "SKIM_CACHE_DIR": str(tmp_path / "cache")})  # fmt: skip
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("skim: error:") and "data.batch_size" in last and "an integer" in last, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert not list(tmp_path.glob("**/*.arrow")) and not list(tmp_path.glob("logs/*/runs/*/metrics.json"))


# ------------------------------------------------------------------------------------ sample limits


def test_sample_limits_cut_before_tokenising(minilm_path, squad_dev, tmp_path, monkeypatch):
    seen: list[int] = []
    featurize = QADataModule.featurize

    def counting(examples, indices, **kw):
        seen.extend(indices)
        return featurize(examples, indices, **kw)

    monkeypatch.setattr(QADataModule, "featurize", staticmethod(counting))
    dm = QADataModule(tokenizer=minilm_path, hub_name=None, train_file=str(squad_dev), validation_file=str(squad_dev),
                      cache_dir=str(tmp_path / "cache"), max_train_samples=7, max_eval_samples=5)  # fmt: skip
    dm.setup("fit")
    # only 7 + 5 of the 10,570 dev questions reach the tokenizer
    assert sorted(seen) == sorted([*range(7), *range(5)])
    assert len(dm.eval_examples) == 5 and set(dm.train_features["example_index"]) == set(range(7))


def test_cls_sample_limits_cut_before_tokenising(minilm_path, tmp_path, monkeypatch):
    seen: list[int] = []
    featurize = ClassificationDataModule.featurize

    def counting(examples, indices, **kw):
        seen.extend(indices)
        return featurize(examples, indices, **kw)

    rows = [{"sentence": f"text number {i}", "label": i % 2} for i in range(40)]
    path = tmp_path / "sst2.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    monkeypatch.setattr(ClassificationDataModule, "featurize", staticmethod(counting))
    dm = ClassificationDataModule(tokenizer=minilm_path, name="sst2", train_file=str(path), validation_file=str(path),
                                  columns={"text": "sentence", "label": "label"}, label_names=["negative", "positive"],
                                  cache_dir=str(tmp_path / "cache"), max_train_samples=6, max_eval_samples=4)  # fmt: skip
    dm.setup("fit")
    assert len(seen) == 6 + 4 and len(dm.train_features) == 6 and len(dm.eval_examples) == 4
