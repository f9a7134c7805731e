"""Sequence-classification data: real GLUE / IMDB / 20 Newsgroups files read by each task's data config, the
configs themselves, featurisation and caching, bad files as one clear line, and the metrics against values computed
by hand."""

from __future__ import annotations

import gzip
import json
import math
import re
import warnings
from types import SimpleNamespace

import datasets
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from skim.data import sources
from skim.data.base import collate
from skim.data.cls_datamodule import ClassificationDataModule
from skim.errors import ConfigError, DataError
from skim.metrics.classification import build_metrics, scaled
from tests.conftest import ROOT, SHARED_DATA, require_shared
from tests.helpers.runs import compose_cfg

# task -> (train file, train size, dev file, dev size, labels): sizes from ../shared/data/SOURCES.md
LOCAL = {
    "cola": ("glue/CoLA/train.tsv", 8551, "glue/CoLA/dev.tsv", 1043, {0, 1}),
    "sst2": ("glue/SST-2/train.tsv", 67349, "glue/SST-2/dev.tsv", 872, {0, 1}),
    "mrpc": ("glue/MRPC/train.tsv", 3668, "glue/MRPC/dev.tsv", 408, {0, 1}),
    "rte": ("glue/RTE/train.tsv", 2490, "glue/RTE/dev.tsv", 277, {0, 1}),
    "stsb": ("glue/STS-B/train.tsv", 5749, "glue/STS-B/dev.tsv", 1500, None),
    "wnli": ("glue/WNLI/train.tsv", 635, "glue/WNLI/dev.tsv", 71, {0, 1}),
    "qnli": (None, None, "glue/QNLI/dev.tsv", 5463, {0, 1}),
    "imdb": ("imdb/train.jsonl.gz", 25000, "imdb/test.jsonl.gz", 25000, {0, 1}),
    "20news": ("20newsgroups/train.jsonl.gz", 11314, "20newsgroups/test.jsonl.gz", 7532, set(range(20))),
}
ALL_TASKS = ["cola", "sst2", "mrpc", "rte", "stsb", "wnli", "qnli", "mnli", "qqp", "imdb", "20news", "yelp"]
MONITORS = {"cola": "val/mcc", "stsb": "val/pearson", "mrpc": "val/f1", "qqp": "val/f1"}


@pytest.fixture
def clean_hydra(monkeypatch):
    monkeypatch.setenv("SKIM_SHARED_DATA", str(SHARED_DATA))
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, dict]:
    """Every classification data config as composed (plain dicts), composed once for the module."""
    out = {}
    for path in sorted((ROOT / "conf" / "data").glob("*.yaml")):
        GlobalHydra.instance().clear()
        cfg = compose_cfg(["model=tiny", f"data={path.stem}"], output_dir=tmp_path_factory.mktemp("cfg")).data
        if cfg.task == "cls":
            out[path.stem] = OmegaConf.to_container(cfg, resolve=False)
    GlobalHydra.instance().clear()
    return out


def _dm(configs, name: str, **kw) -> ClassificationDataModule:
    options = {k: v for k, v in configs[name].items() if not k.startswith("_") and k != "tokenizer"}
    return ClassificationDataModule(**{**options, "tokenizer": "unused", "cache_dir": None, **kw})


def _read(configs, task: str, path, split: str = "train") -> datasets.Dataset:
    """``path`` read the way data=<task> reads its files."""
    return _dm(configs, task).load(str(path), split, "data.train_file")


# ---------------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize("task", list(LOCAL))
def test_local_files_load_with_official_counts(task, configs):
    train, n_train, dev, n_dev, labels = LOCAL[task]
    dm = _dm(configs, task)
    for rel, n in ((train, n_train), (dev, n_dev)):
        if rel is None:
            continue
        ds = _read(configs, task, require_shared(SHARED_DATA / rel))
        assert len(ds) == n, rel
        assert ds.column_names == ["text", "text_pair", "label"] and all(ds["text"])
        assert all(ds["text_pair"]) if dm.is_pair else set(ds["text_pair"]) == {""}
        if labels is None:  # STS-B: float scores in [0, 5] spanning the range
            scores = ds["label"]
            assert ds.features["label"] == datasets.Value("float32") and min(scores) == 0.0 and max(scores) == 5.0
            assert len(set(scores)) > 50
        else:
            assert set(ds["label"]) == labels and ds.features["label"].names == dm.label_names


def test_label_ids_follow_the_hub_order(configs):
    g = require_shared() / "glue"
    rte = _read(configs, "rte", g / "RTE" / "train.tsv")  # row 0: not_entailment
    assert rte[0]["label"] == 1 and rte.features["label"].int2str(1) == "not_entailment"
    qnli = _read(configs, "qnli", g / "QNLI" / "dev.tsv")  # rows 0, 1: entailment, not_entailment
    assert qnli["label"][:2] == [0, 1]
    assert qnli[0]["text"].startswith("What came into force") and qnli[0]["text_pair"].startswith("As of that day")
    wnli = _read(configs, "wnli", g / "WNLI" / "dev.tsv")  # "0" = not_entailment in GLUE's WNLI files
    assert wnli[0]["label"] == 0 and wnli.features["label"].names[0] == "not_entailment"
    cola = _read(configs, "cola", g / "CoLA" / "dev.tsv")  # no header: the first line is an example
    assert cola[0] == {"text": "The sailors rode the breeze clear of the rocks.", "text_pair": "", "label": 1}
    mrpc = _read(configs, "mrpc", g / "MRPC" / "dev.tsv")  # header after a BOM; "Quality" is the label
    assert mrpc[0]["label"] == 1 and mrpc[0]["text"].startswith("He said the foodservice pie")
    sts = _read(configs, "stsb", g / "STS-B" / "train.tsv")
    assert sts["label"][:2] == pytest.approx([5.0, 3.8])
    assert configs["mnli"]["label_names"] == ["entailment", "neutral", "contradiction"]
    # 20 Newsgroups: our ids/names equal the file's own label_name field
    with gzip.open(require_shared(SHARED_DATA / "20newsgroups" / "test.jsonl.gz"), "rt", encoding="utf-8") as f:
        pairs = {(r["label"], r["label_name"]) for r in map(json.loads, f)}
    assert pairs == set(enumerate(configs["20news"]["label_names"]))
    imdb = _read(configs, "imdb", SHARED_DATA / "imdb" / "test.jsonl.gz")
    assert imdb["label"][0] == 0 and imdb["label"][-1] == 1  # sorted neg then pos


# ---------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ALL_TASKS)
def test_configs_describe_their_task(name, configs):
    cfg = configs[name]
    assert cfg["_target_"] == "skim.data.cls_datamodule.ClassificationDataModule" and cfg["task"] == "cls"
    assert cfg["name"] == name and cfg["monitor"] == MONITORS.get(name, "val/acc")
    assert cfg["train_file"] is None and cfg["validation_file"] is None and cfg["padding"] == "dynamic"
    dm = _dm(configs, name)
    assert dm.num_labels == (1 if name == "stsb" else 20 if name == "20news" else 3 if name == "mnli" else 2)
    assert dm.monitor in [f"val/{m}" for m in dm.metric_names]
    # the paper's scripts: GLUE and IMDB 0.5, 20 Newsgroups and Yelp 0.2
    assert cfg["transkimmer_coefficient"] == (0.2 if name in ("20news", "yelp") else 0.5)
    assert (configs["mnli"]["validation_split"], configs["imdb"]["validation_split"]) == ("validation_matched", "test")
    assert (configs["20news"]["hub_name"], configs["yelp"]["hub_name"]) == ("SetFit/20_newsgroups", "yelp_polarity")


def _local_dm(name, minilm_path, tmp_path, **kw) -> ClassificationDataModule:
    cfg = compose_cfg(["model=tiny", f"data={name}_local"], output_dir=tmp_path).data
    return instantiate(cfg, tokenizer=minilm_path, cache_dir=str(tmp_path / "cache"), **kw)


@pytest.mark.parametrize("name", list(LOCAL))
def test_local_config_batches(name, minilm_path, tmp_path, clean_hydra):
    train, _, dev, dev_size, labels = LOCAL[name]
    require_shared(SHARED_DATA / dev)
    dm = _local_dm(name, minilm_path, tmp_path, max_train_samples=64, max_eval_samples=64)
    assert dm.hub_name is None and dm.sources["validation"][0] == str(SHARED_DATA / dev)
    dm.setup("fit" if train else "validate")
    loaders = [dm.val_dataloader()] + ([dm.train_dataloader()] if train else [])
    for loader in loaders:
        batch = next(iter(loader))
        n = len(batch["labels"])
        assert n == min(loader.batch_size, 64)
        for key in ("input_ids", "attention_mask", "token_type_ids", "protect_mask"):
            assert batch[key].dtype == torch.long and batch[key].shape == batch["input_ids"].shape
        width = batch["input_ids"].shape[1]
        assert width == int(batch["attention_mask"].sum(1).max()) <= dm.max_seq_length
        assert (batch["input_ids"][:, 0] == dm.tokenizer.cls_token_id).all()
        assert batch["protect_mask"].sum().item() == n and (batch["protect_mask"][:, 0] == 1).all()
        assert bool((batch["token_type_ids"] == 1).any()) == dm.is_pair
        if dm.is_regression:
            assert batch["labels"].dtype == torch.float32 and ((batch["labels"] >= 0) & (batch["labels"] <= 5)).all()
        else:
            assert batch["labels"].dtype == torch.long and set(batch["labels"].tolist()) <= labels
        assert batch["example_index"].dtype == torch.long
    val = next(iter(dm.val_dataloader()))
    assert val["example_index"].tolist() == list(range(len(val["labels"])))  # not shuffled
    assert val["labels"].tolist() == pytest.approx(dm.eval_examples["label"][: len(val["labels"])])
    described = dm.describe()
    assert (described["train_features"], described["eval_examples"], described["eval_split_examples"]) == (
        64 if train else None,
        64,
        dev_size,
    )
    if name in ("imdb", "20news"):  # the files are sorted by label: the subset must not be
        assert len(set(dm.eval_examples["label"])) > 1


def test_cache_and_padding(minilm_path, tmp_path, clean_hydra):
    require_shared(SHARED_DATA / "glue" / "RTE")
    dm = _local_dm("rte", minilm_path, tmp_path, max_train_samples=48, max_eval_samples=48)
    dm.setup("fit")
    assert dm.cache_hits == {"train": False, "validation": False}
    dm2 = _local_dm("rte", minilm_path, tmp_path, max_train_samples=48, max_eval_samples=48)
    dm2.setup("fit")
    assert dm2.cache_hits == {"train": True, "validation": True}
    assert dm2.train_features["input_ids"] == dm.train_features["input_ids"]
    # every featurisation option is part of the key
    dm3 = _local_dm("rte", minilm_path, tmp_path, max_train_samples=48, max_eval_samples=48, max_seq_length=64)
    dm3.setup("validate")
    assert dm3.cache_hits == {"validation": False}
    assert max(len(x) for x in dm3.eval_dataset["input_ids"]) == 64  # RTE premises are long: truncated
    dm4 = _local_dm("rte", minilm_path, tmp_path, max_eval_samples=48, max_seq_length=64, padding="max_length")
    dm4.setup("validate")
    assert dm4.cache_hits == {"validation": False}
    batch = next(iter(dm4.val_dataloader()))
    assert batch["input_ids"].shape == (48, 64) and dm4.describe()["padding"] == "max_length"
    assert (batch["protect_mask"].sum(1) == 1).all()


def test_datamodule_config_errors(minilm_path, configs):
    with pytest.raises(ConfigError, match="data.task=cls"):
        _dm(configs, "sst2", task="qa")
    with pytest.raises(ConfigError, match="not a metric of data set cola"):
        _dm(configs, "cola", monitor="val/acc")
    with pytest.raises(ConfigError, match="data.padding"):
        _dm(configs, "sst2", padding="longest")
    with pytest.raises(ConfigError, match="data.columns must name distinct 'text' and 'label'"):
        _dm(configs, "sst2", columns={"sentence": "sentence"})
    with pytest.raises(ConfigError, match="unknown classification metric"):
        _dm(configs, "sst2", metrics=["accuracy"])
    dm = _dm(configs, "sst2", hub_name=None, tokenizer=minilm_path)
    assert dm.monitor == "val/acc"
    with pytest.raises(ConfigError, match="data.train_file"):
        dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=3)
    with pytest.raises(ConfigError, match="not divisible by the number of devices"):
        dm._per_device(32)
    with pytest.raises(ConfigError, match="model_max_length"):
        _ = _dm(configs, "sst2", tokenizer=minilm_path, max_seq_length=1024).tokenizer


def test_collate():
    feats = [
        {"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "protect_mask": [1, 0, 0],
         "labels": 2.5, "example_index": 0},
        {"input_ids": [101, 102], "attention_mask": [1, 1], "token_type_ids": [0, 0], "protect_mask": [1, 0],
         "labels": 4.0, "example_index": 1},
    ]  # fmt: skip
    scalars = {"labels": torch.float32, "example_index": torch.long}
    batch = collate(feats, scalars=scalars)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["protect_mask"].tolist() == [[1, 0, 0], [1, 0, 0]]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [2.5, 4.0]
    assert collate(feats, scalars=scalars, pad_to=6)["input_ids"].shape == (2, 6)


# ---------------------------------------------------------------------------------------------- Hub path


def test_hub_failure_is_one_line_for_offline_users(monkeypatch, configs):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(sources.datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        _dm(configs, "mnli").load(None, "validation_matched", "data.validation_file")
    msg = str(err.value)
    assert "\n" not in msg and "'glue'" in msg and "'mnli'" in msg and "set data.validation_file" in msg


def _hub(monkeypatch, rows: datasets.Dataset) -> None:
    monkeypatch.setattr(sources.datasets, "load_dataset", lambda *a, **k: rows)


def test_hub_datasets_are_normalised(monkeypatch, configs):
    rte = datasets.Dataset.from_dict(
        {"sentence1": ["a b", "c"], "sentence2": ["b", "d"], "label": [1, 0], "idx": [0, 1]},
        features=datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
                                    "idx": datasets.Value("int32")}),
    )  # fmt: skip
    _hub(monkeypatch, rte)
    ds = _dm(configs, "rte").load(None, "train", "data.train_file")
    assert ds.column_names == ["text", "text_pair", "label"] and ds[0] == {"text": "a b", "text_pair": "b", "label": 1}
    with pytest.raises(DataError, match="missing column.*'hypothesis'"):
        _dm(configs, "mnli").load(None, "train", "data.train_file")
    yelp = datasets.Dataset.from_dict(
        {"text": ["bad", "good"], "label": [0, 1]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["1", "2"])}),
    )
    _hub(monkeypatch, yelp)  # the Hub's ids, not the CSV files' "1"/"2"
    ds = _dm(configs, "yelp").load(None, "test", "data.validation_file")
    assert (
        ds["text_pair"] == ["", ""] and ds["label"] == [0, 1] and ds.features["label"].names == ["negative", "positive"]
    )
    with pytest.raises(DataError, match=r"the labels have 2 classes \(1, 2\), data.label_names 3"):
        _dm(configs, "yelp", label_names=["a", "b", "c"]).load(None, "test", "data.validation_file")
    _hub(monkeypatch, datasets.Dataset.from_dict({"sentence": ["x"], "label": [-1]}))
    with pytest.raises(DataError, match=r"^Hub dataset 'glue' \(config 'sst2'\) split 'test': row 0: unknown label -1 .*unlabelled test"):
        _dm(configs, "sst2").load(None, "test", "data.validation_file")


# ---------------------------------------------------------------------------------------------- bad files


def _write(tmp_path, name, text):
    p = tmp_path / name
    if name.endswith(".gz"):
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p.write_text(text, encoding="utf-8")
    return p


BAD_FILES = [
    # (task, file name, content, patterns the message must hold)
    ("rte", "missing_col.tsv", "index\tsentence1\tlabel\n0\ta\tentailment\n", ["missing column(s) 'sentence2'"]),
    ("rte", "stray_tab.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tx\tb\tentailment\n", ["cannot be read as .tsv data", "Length of header or names does not match"]),
    ("rte", "maybe.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n",
     ["maybe.tsv: row 1 (line 3): unknown label 'maybe'", "'entailment'", "'not_entailment'"]),
    ("sst2", "seven.tsv", "sentence\tlabel\ngood film\t1\nodd film\t7\n", ["seven.tsv: row 1 (line 3): unknown label '7'", "'0', '1'"]),
    ("sst2", "superscript.tsv", "sentence\tlabel\ngood film\t1\nodd film\t\u00b2\n", ["superscript.tsv: row 1 (line 3): unknown label '\u00b2'"]),
    ("sst2", "empty.tsv", "", ["cannot be read as .tsv data"]),
    ("sst2", "header_only.tsv", "sentence\tlabel\n", ["no rows"]),
    ("stsb", "score.tsv", "sentence1\tsentence2\tscore\na\tb\t4.2\nc\td\tfive\n", ["score.tsv: row 1 (line 3): score 'five' is not a number"]),
    ("stsb", "range.tsv", "sentence1\tsentence2\tscore\na\tb\t7.5\n", ["range.tsv: row 0 (line 2): score 7.5 is not a finite number in [0.0, 5.0]"]),
    ("cola", "with_header.tsv", "source\tlabel\tmark\tsentence\nx\t1\t\tok .\n", ["with_header.tsv: row 0 (line 1): unknown label 'label'"]),  # names given: no header
    ("imdb", "bad.jsonl", '{"text": "fine", "label": 1}\n{"text": "oops", "label": 1\n', ["cannot be read as .jsonl data"]),
    ("imdb", "bad.jsonl.gz", '{"text": "fine", "label": 1}\n\n{"text": "x", "label": 2}\n', ["bad.jsonl.gz: row 1 (line 3): unknown label 2", "'0', '1', 'neg', 'pos'"]),
    ("imdb", "nofield.jsonl", '{"review": "fine", "label": 1}\n', ["missing column(s) 'text'"]),
    ("imdb", "notext.jsonl", '{"text": 5, "label": 1}\n{"text": null, "label": 1}\n', ["notext.jsonl: row 0 (line 1): the text must be a string, got 5"]),
    ("imdb", "empty.jsonl.gz", "\n", ["no rows"]),
    ("imdb", "reviews.txt", "hello\n", ["unsupported file type", ".jsonl"]),
]  # fmt: skip


@pytest.mark.parametrize("task,name,text,patterns", BAD_FILES, ids=[b[1] for b in BAD_FILES])
def test_bad_files_raise_one_clear_line(tmp_path, configs, task, name, text, patterns):
    path = _write(tmp_path, name, text)
    with pytest.raises(DataError) as err:
        _read(configs, task, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    for p in patterns:
        assert p in msg, (p, msg)


def test_missing_file_and_directory(tmp_path, configs):
    with pytest.raises(DataError, match="nope.tsv: file not found"):
        _read(configs, "sst2", tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="no data files found"):
        _read(configs, "sst2", tmp_path)


def test_other_layouts(tmp_path, configs):
    # JSONL labels may be ids or names; pair tasks read both texts
    p = _write(tmp_path, "rte.jsonl", '{"sentence1": "a", "sentence2": "b", "label": "not_entailment"}\n'
                                      '{"sentence1": "c", "sentence2": "d", "label": 0}\n')  # fmt: skip
    assert _read(configs, "rte", p)[:] == {"text": ["a", "c"], "text_pair": ["b", "d"], "label": [1, 0]}
    # the original Yelp polarity CSV: no header, quoted texts with commas / newlines, labels "1" / "2"
    p = _write(tmp_path, "train.csv", '"2","Great food, friendly staff."\n"1","Cold.\nNever again, ""sorry"""\n')
    ds = _read(configs, "yelp", p)
    assert ds["label"] == [1, 0] and ds["text"][1] == 'Cold.\nNever again, "sorry"'
    with pytest.raises(DataError, match=r"bad\.csv: row 0 \(line 1\): unknown label '0' \(allowed: '1', '2'\)"):
        _read(configs, "yelp", _write(tmp_path, "bad.csv", '"0","text"\n'))
    # MNLI: GLUE's many-column TSV, string gold labels
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    p = _write(tmp_path, "dev_matched.tsv", header + '0\t1\t2\tfiction\tHe said "hi.\tHe spoke.\tentailment\tneutral\n')
    assert _read(configs, "mnli", p)[0] == {"text": 'He said "hi.', "text_pair": "He spoke.", "label": 1}
    # QQP: GLUE/HF readers skip its few short rows; so do we
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    p = _write(tmp_path, "qqp.tsv", header + "1\t1\t2\tWhy?\tHow?\t0\n2\t3\n")
    assert _read(configs, "qqp", p)["label"] == [0]


def test_a_row_is_located_in_its_file(tmp_path, configs):
    # slices and QQP's skipped short rows do not shift the file's row numbers; the line counts the header and blank lines
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    p = _write(tmp_path, "qqp.tsv", header + "1\t1\t2\tWhy?\tHow?\t0\n2\t3\n\n3\t5\t6\tA?\tB?\tmaybe\n")
    for split in ("train", "train[1:]", "train[-1:]"):
        with pytest.raises(DataError, match=rf"^{re.escape(str(p))}: row 2 \(line 5\): unknown label 'maybe'"):
            _read(configs, "qqp", p, split)
    # a CSV row gets its line where no quote before it can have joined lines
    p = _write(tmp_path, "yelp.csv", '1,fine\n \t\n3,"odd, ""quoted"""\n2,"two\nlines"\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(p))}: row 1 \(line 3\): unknown label '3'"):
        _read(configs, "yelp", p)
    p = _write(tmp_path, "yelp.csv", '2,"two\nlines"\n3,odd\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(p))}: row 1: unknown label '3'"):
        _read(configs, "yelp", p)


def test_table_cells_are_read_as_text(tmp_path, configs):
    # pandas would type a column per 10,000-row chunk: number-like sentences, and an empty cell in a late chunk of a
    # number column (QQP's broken rows), must read as the file has them
    p = _write(tmp_path, "numbers.tsv", "sentence\tlabel\n1990\t1\nTrue\t0\n007\t1\n")
    assert _read(configs, "sst2", p)["text"] == ["1990", "True", "007"]
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    rows = [f"{i}\t{2 * i}\t{2 * i + 1}\tWhy {i}?\tHow {i}?\t{i % 2}\n" for i in range(25_000)]
    rows.insert(15_000, "15000x\t3\n")  # a short row far past the first chunk
    assert len(_read(configs, "qqp", _write(tmp_path, "qqp_train.tsv", header + "".join(rows)))) == 25_000


def test_a_rewritten_file_is_read_again(tmp_path, configs):
    import os

    p = _write(tmp_path, "sst2.tsv", "sentence\tlabel\ngood\t1\n")
    st = p.stat()
    assert _dm(configs, "sst2", cache_dir=str(tmp_path / "c")).load(str(p), "train", "data.train_file")["text"] == ["good"]
    _write(tmp_path, "sst2.tsv", "sentence\tlabel\nbad film\t0\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old modification time, as cp -p or rsync -a would leave it
    assert _dm(configs, "sst2", cache_dir=str(tmp_path / "c")).load(str(p), "train", "data.train_file")["text"] == ["bad film"]


def test_a_folder_without_data_files_for_the_split(tmp_path, configs):
    (tmp_path / "data").mkdir()
    for name in ("train.txt", "dev.txt"):
        (tmp_path / "data" / name).write_text("x\n")
    with pytest.raises(DataError, match=r"no file for split|no \.jsonl, .* file"):
        _read(configs, "sst2", tmp_path / "data")


# ---------------------------------------------------------------------------------------------- metrics


def _compute(names, num_labels, preds, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SpearmanCorrCoef's memory warning
        m = build_metrics(names, num_labels)
        m.update(preds, target)
        return {k: float(v) for k, v in m.compute().items()}


def test_binary_metrics_by_hand():
    # confusion matrix: TP 3, FN 1, FP 1, TN 2
    preds = torch.tensor([1, 1, 1, 0, 1, 0, 0])
    target = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    tp, tn, fp, fn = 3, 2, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # 5 / 12
    f1 = 2 * tp / (2 * tp + fp + fn)  # 0.75
    out = _compute(["acc", "f1", "mcc"], 2, preds, target)
    assert list(out) == ["acc", "f1", "mcc"]
    assert out["acc"] == pytest.approx(5 / 7) and out["f1"] == pytest.approx(f1) and out["mcc"] == pytest.approx(mcc)
    assert mcc == pytest.approx(5 / 12)
    # F1 is the F1 of class 1: swapping the classes changes it (class 0 has TP 2, FP 1, FN 1 -> 2/3)
    assert _compute(["f1"], 2, 1 - preds, 1 - target)["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_multiclass_metrics_by_hand():
    preds = torch.tensor([0, 1, 2, 2, 1, 0])
    target = torch.tensor([0, 1, 2, 1, 1, 2])
    # Gorodkin's R_K: c correct, s samples, p_k predicted and t_k true counts of class k
    c, s, p, t = 4, 6, [2, 2, 2], [1, 3, 2]
    mcc = (c * s - sum(a * b for a, b in zip(p, t))) / math.sqrt(
        (s * s - sum(a * a for a in p)) * (s * s - sum(b * b for b in t))
    )  # (24 - 12) / sqrt(24 * 22)
    out = _compute(["acc", "mcc"], 3, preds, target)
    assert out["acc"] == pytest.approx(4 / 6) and out["mcc"] == pytest.approx(mcc)
    with pytest.raises(ConfigError, match="binary F1"):
        build_metrics(["f1"], 3)


def test_regression_metrics_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([1.0, 3.0, 2.0, 5.0])
    # Pearson: sum(dx*dy) / sqrt(sum dx^2 * sum dy^2) with means 2.5 and 2.75
    pearson = 5.5 / math.sqrt(5.0 * 8.75)
    # Spearman: ranks of y are 1 3 2 4, d = 0 -1 1 0: 1 - 6 * 2 / (4 * (16 - 1))
    spearman = 1 - 6 * 2 / (4 * 15)
    out = _compute(["pearson", "spearman"], 1, x, y)
    assert out["pearson"] == pytest.approx(pearson, abs=1e-5) and out["spearman"] == pytest.approx(spearman, abs=1e-5)
    with pytest.raises(ConfigError, match="does not apply to a regression task"):
        build_metrics(["acc"], 1)
    with pytest.raises(ConfigError, match="does not apply to a 2-class task"):
        build_metrics(["pearson"], 2)
    with pytest.raises(ConfigError, match="unknown classification metric"):
        build_metrics(["accuracy"], 2)


def test_scaled_reports_percentages():
    res = {"val/acc": torch.tensor(0.913), "val/mcc": 0.5, "val/loss": torch.tensor(0.7), "spearman": 0.25}
    out = scaled(res)
    assert float(out["val/acc"]) == pytest.approx(91.3) and out["val/mcc"] == pytest.approx(50.0)
    assert float(out["val/loss"]) == pytest.approx(0.7) and out["spearman"] == pytest.approx(25.0)
    assert isinstance(out["val/acc"], torch.Tensor)
