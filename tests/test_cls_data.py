"""Sequence-classification data: real GLUE / IMDB / 20 Newsgroups files, the Hydra data configs, featurisation and
caching, strict validation of bad files, and the metrics against values computed by hand."""

from __future__ import annotations

import gzip
import json
import math
import warnings
from types import SimpleNamespace

import datasets
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from skim.data.cls_datamodule import ClassificationDataModule, cls_collate
from skim.data.cls_io import TASKS, get_task, load_cls, normalise_hub_cls, read_cls_file
from skim.errors import ConfigError, DataError
from skim.metrics.classification import build_metrics, scaled
from tests.conftest import SHARED_DATA, require_shared
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


@pytest.fixture
def clean_hydra(monkeypatch):
    monkeypatch.setenv("SKIM_SHARED_DATA", str(SHARED_DATA))
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


# ---------------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize("task", list(LOCAL))
def test_local_files_load_with_official_counts(task):
    train, n_train, dev, n_dev, labels = LOCAL[task]
    spec = TASKS[task]
    for rel, n in ((train, n_train), (dev, n_dev)):
        if rel is None:
            continue
        ds = read_cls_file(require_shared(SHARED_DATA / rel), spec=spec)
        assert len(ds) == n, rel
        assert ds.column_names == ["text_a", "text_b", "label"]
        assert all(ds["text_a"])
        if spec.is_pair:
            assert all(ds["text_b"])
        else:
            assert set(ds["text_b"]) == {""}
            assert json.loads(ds.info.description) == {"task": task, "pair": False}
        if labels is None:  # STS-B: float scores in [0, 5] spanning the range
            assert ds.features["label"] == datasets.Value("float32")
            scores = ds["label"]
            assert min(scores) == 0.0 and max(scores) == 5.0
            assert len(set(scores)) > 50
        else:
            assert set(ds["label"]) == labels
            assert ds.features["label"].names == list(spec.label_names)


def test_label_ids_follow_the_hub_order():
    require_shared()
    g = SHARED_DATA / "glue"
    rte = read_cls_file(g / "RTE" / "train.tsv", spec=TASKS["rte"])  # row 0: not_entailment
    assert rte[0]["label"] == 1 and rte.features["label"].int2str(1) == "not_entailment"
    qnli = read_cls_file(g / "QNLI" / "dev.tsv", spec=TASKS["qnli"])  # rows 0, 1: entailment, not_entailment
    assert qnli["label"][:2] == [0, 1]
    assert qnli[0]["text_a"].startswith("What came into force") and qnli[0]["text_b"].startswith("As of that day")
    wnli = read_cls_file(g / "WNLI" / "dev.tsv", spec=TASKS["wnli"])  # "0" = not_entailment in GLUE's WNLI files
    assert wnli[0]["label"] == 0 and TASKS["wnli"].label_names[0] == "not_entailment"
    cola = read_cls_file(g / "CoLA" / "dev.tsv", spec=TASKS["cola"])  # no header: the first line is an example
    assert cola[0] == {"text_a": "The sailors rode the breeze clear of the rocks.", "text_b": "", "label": 1}
    mrpc = read_cls_file(g / "MRPC" / "dev.tsv", spec=TASKS["mrpc"])  # header after a BOM; "Quality" is the label
    assert mrpc[0]["label"] == 1 and mrpc[0]["text_a"].startswith("He said the foodservice pie")
    sts = read_cls_file(g / "STS-B" / "train.tsv", spec=TASKS["stsb"])
    assert sts["label"][:2] == pytest.approx([5.0, 3.8])
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    # 20 Newsgroups: our ids/names equal the file's own label_name field
    with gzip.open(require_shared(SHARED_DATA / "20newsgroups" / "test.jsonl.gz"), "rt", encoding="utf-8") as f:
        pairs = {(r["label"], r["label_name"]) for r in map(json.loads, f)}
    assert pairs == set(enumerate(TASKS["20news"].label_names))
    imdb = read_cls_file(SHARED_DATA / "imdb" / "test.jsonl.gz", spec=TASKS["imdb"])
    assert imdb["label"][0] == 0 and imdb["label"][-1] == 1  # sorted neg then pos


# ---------------------------------------------------------------------------------------------- registry/configs


def test_registry():
    assert set(TASKS) == set(ALL_TASKS) | {"synthetic_sentiment"}  # plus the generated quickstart set
    monitors = {"cola": "val/mcc", "stsb": "val/pearson", "mrpc": "val/f1", "qqp": "val/f1"}
    for name, spec in TASKS.items():
        assert spec.monitor == monitors.get(name, "val/acc")
        assert spec.main_metric in spec.metric_names
        assert spec.num_labels == (1 if spec.is_regression else len(spec.label_names))
    assert TASKS["mnli"].hub_validation_split == "validation_matched"
    assert TASKS["20news"].hub_name == "SetFit/20_newsgroups" and TASKS["20news"].num_labels == 20
    assert (TASKS["imdb"].hub_validation_split, TASKS["yelp"].hub_name) == ("test", "yelp_polarity")
    with pytest.raises(ConfigError, match="known: cola, sst2"):
        get_task("sst-2")


@pytest.mark.parametrize("name", ALL_TASKS)
def test_configs_agree_with_registry(name, tmp_path, clean_hydra):
    spec = TASKS[name]
    cfg = compose_cfg(["model=tiny", f"data={name}"], output_dir=tmp_path).data
    assert cfg._target_ == "skim.data.cls_datamodule.ClassificationDataModule" and cfg.task == "cls"
    assert (cfg.name, cfg.monitor, cfg.hub_name, cfg.hub_config) == (name, spec.monitor, spec.hub_name, spec.hub_config)
    assert (cfg.train_split, cfg.validation_split) == (spec.hub_train_split, spec.hub_validation_split)
    assert cfg.max_seq_length == spec.max_seq_length and cfg.padding == "dynamic"
    assert cfg.train_file is None and cfg.validation_file is None


def _local_dm(name, minilm_path, tmp_path, **kw) -> ClassificationDataModule:
    cfg = compose_cfg(["model=tiny", f"data={name}_local"], output_dir=tmp_path).data
    return instantiate(cfg, tokenizer=minilm_path, cache_dir=str(tmp_path / "cache"), **kw)


@pytest.mark.parametrize("name", list(LOCAL))
def test_local_config_batches(name, minilm_path, tmp_path, clean_hydra):
    train, _, dev, dev_size, labels = LOCAL[name]
    require_shared(SHARED_DATA / dev)
    spec = TASKS[name]
    dm = _local_dm(name, minilm_path, tmp_path, max_train_samples=64, max_eval_samples=64)
    assert dm.hparams.hub_name is None and dm.hparams.validation_file == str(SHARED_DATA / dev)
    assert (dm.num_labels, dm.is_regression) == (spec.num_labels, spec.is_regression)
    assert dm.metric_names == list(spec.metric_names) and dm.label_names == list(spec.label_names)
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
        assert bool((batch["token_type_ids"] == 1).any()) == spec.is_pair
        if spec.is_regression:
            assert batch["labels"].dtype == torch.float32 and ((batch["labels"] >= 0) & (batch["labels"] <= 5)).all()
        else:
            assert batch["labels"].dtype == torch.long and set(batch["labels"].tolist()) <= labels
        assert batch["example_index"].dtype == torch.long
    val = next(iter(dm.val_dataloader()))
    assert val["example_index"].tolist() == list(range(len(val["labels"])))  # not shuffled
    assert val["labels"].tolist() == pytest.approx(dm.eval_examples["label"][: len(val["labels"])])
    assert dm.describe() == {
        "data": name, "padding": "dynamic", "group_by_length": False, "max_seq_length": spec.max_seq_length,
        "train_examples": 64 if train else None, "eval_examples": 64, "eval_split_examples": dev_size,
    }
    if name == "20news":
        assert dm.num_labels == 20 and len(dm.label_names) == 20
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


def test_datamodule_config_errors(minilm_path, tmp_path):
    with pytest.raises(ConfigError, match="unknown classification task data.name='sst-2'; known: cola"):
        ClassificationDataModule(tokenizer=minilm_path, name="sst-2")
    with pytest.raises(ConfigError, match="data.task=cls"):
        ClassificationDataModule(tokenizer=minilm_path, name="sst2", task="qa")
    with pytest.raises(ConfigError, match="not a metric of task cola"):
        ClassificationDataModule(tokenizer=minilm_path, name="cola", monitor="val/acc")
    with pytest.raises(ConfigError, match="data.padding"):
        ClassificationDataModule(tokenizer=minilm_path, name="sst2", padding="longest")
    dm = ClassificationDataModule(tokenizer=minilm_path, name="sst2", hub_name=None)
    assert dm.monitor == "val/acc"
    with pytest.raises(ConfigError, match="data.train_file"):
        dm.setup("fit")
    dm.trainer = SimpleNamespace(world_size=3)
    with pytest.raises(ConfigError, match="not divisible by the number of devices"):
        dm._per_device(32)
    with pytest.raises(ConfigError, match="model_max_length"):
        _ = ClassificationDataModule(tokenizer=minilm_path, name="sst2", max_seq_length=1024).tokenizer


def test_collate():
    feats = [
        {"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "protect_mask": [1, 0, 0],
         "labels": 2.5, "example_index": 0},
        {"input_ids": [101, 102], "attention_mask": [1, 1], "token_type_ids": [0, 0], "protect_mask": [1, 0],
         "labels": 4.0, "example_index": 1},
    ]  # fmt: skip
    batch = cls_collate(feats, regression=True)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["protect_mask"].tolist() == [[1, 0, 0], [1, 0, 0]]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [2.5, 4.0]
    assert cls_collate(feats, pad_to=6)["input_ids"].shape == (2, 6)


# ---------------------------------------------------------------------------------------------- Hub path


def test_hub_failure_is_one_line_for_offline_users(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load_cls(None, spec=TASKS["mnli"], split="validation_matched", hub_name="glue", hub_config="mnli",
                 source_option="data.validation_file")  # fmt: skip
    msg = str(err.value)
    assert "\n" not in msg and "'glue'" in msg and "'mnli'" in msg and "set data.validation_file" in msg


def test_hub_datasets_are_normalised():
    rte = datasets.Dataset.from_dict(
        {"sentence1": ["a b", "c"], "sentence2": ["b", "d"], "label": [1, 0], "idx": [0, 1]},
        features=datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
                                    "idx": datasets.Value("int32")}),
    )  # fmt: skip
    ds = normalise_hub_cls(rte, spec=TASKS["rte"], name="glue", split="train")
    assert ds.column_names == ["text_a", "text_b", "label"] and ds[0] == {"text_a": "a b", "text_b": "b", "label": 1}
    yelp = datasets.Dataset.from_dict(
        {"text": ["bad", "good"], "label": [0, 1]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["1", "2"])}),
    )
    ds = normalise_hub_cls(yelp, spec=TASKS["yelp"], name="yelp_polarity", split="test")
    assert ds["text_b"] == ["", ""] and ds.features["label"].names == ["negative", "positive"]
    test_split = datasets.Dataset.from_dict({"sentence": ["x"], "label": [-1]})
    with pytest.raises(DataError, match=r"row 0: label -1 .*unlabelled test split"):
        normalise_hub_cls(test_split, spec=TASKS["sst2"], name="glue", split="test")
    with pytest.raises(DataError, match="missing column.*'hypothesis'"):
        normalise_hub_cls(rte, spec=TASKS["mnli"], name="glue", split="train")


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
    ("rte", "missing_col.tsv", "index\tsentence1\tlabel\n0\ta\tentailment\n", ["line 1", "no column 'sentence2'"]),
    ("rte", "short_row.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\n",
     ["line 3", "2 tab-separated field(s)", "missing column 'sentence2'"]),
    ("rte", "stray_tab.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tx\tb\tentailment\n", ["line 2", "stray tab"]),
    ("rte", "maybe.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n",
     ["line 3", "unknown label 'maybe'", "'entailment'", "'not_entailment'"]),
    ("sst2", "seven.tsv", "sentence\tlabel\ngood film\t1\nodd film\t7\n", ["line 3", "unknown label '7'", "'0', '1'"]),
    ("sst2", "empty.tsv", "", ["no examples (empty file)"]),
    ("sst2", "header_only.tsv", "sentence\tlabel\n", ["no examples (header only)"]),
    ("stsb", "score.tsv", "sentence1\tsentence2\tscore\na\tb\t4.2\nc\td\tfive\n",
     ["line 3", "score 'five' in column 'score'", "is not a number"]),
    ("stsb", "range.tsv", "sentence1\tsentence2\tscore\na\tb\t7.5\n", ["line 2", "outside [0, 5]"]),
    ("cola", "with_header.tsv", "source\tlabel\tmark\tsentence\nx\t1\t\tok .\n", ["line 1", "no header line"]),
    ("imdb", "bad.jsonl", '{"text": "fine", "label": 1}\n{"text": "oops", "label": 1\n', ["line 2", "invalid JSON"]),
    ("imdb", "bad.jsonl.gz", '{"text": "fine", "label": 1}\n\n{"text": "x", "label": 2}\n',
     ["line 3", "unknown label 2", "ids 0..1"]),
    ("imdb", "nofield.jsonl", '{"review": "fine", "label": 1}\n', ["line 1", "missing field 'text'"]),
    ("imdb", "notext.jsonl", '{"text": 5, "label": 1}\n', ["line 1", "'text' must be a string"]),
    ("imdb", "empty.jsonl.gz", "\n", ["no examples"]),
    ("imdb", "reviews.txt", "hello\n", ["unsupported file type", ".jsonl"]),
]  # fmt: skip


@pytest.mark.parametrize("task,name,text,patterns", BAD_FILES, ids=[b[1] for b in BAD_FILES])
def test_bad_files_raise_one_clear_line(tmp_path, task, name, text, patterns):
    path = _write(tmp_path, name, text)
    with pytest.raises(DataError) as err:
        read_cls_file(path, spec=TASKS[task])
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    for p in patterns:
        assert p in msg, (p, msg)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: file not found"):
        load_cls(tmp_path / "nope.tsv", spec=TASKS["sst2"], split="train")
    with pytest.raises(DataError, match="is a directory"):
        read_cls_file(tmp_path, spec=TASKS["sst2"])


def test_other_layouts(tmp_path):
    # JSONL labels may be ids or names; pair tasks read both texts
    p = _write(tmp_path, "rte.jsonl", '{"sentence1": "a", "sentence2": "b", "label": "not_entailment"}\n'
                                      '{"sentence1": "c", "sentence2": "d", "label": 0}\n')  # fmt: skip
    assert read_cls_file(p, spec=TASKS["rte"])[:] == {"text_a": ["a", "c"], "text_b": ["b", "d"], "label": [1, 0]}
    # the original Yelp polarity CSV: no header, quoted texts with commas / newlines, labels "1" / "2"
    p = _write(tmp_path, "train.csv", '"2","Great food, friendly staff."\n"1","Cold.\nNever again, ""sorry"""\n')
    ds = read_cls_file(p, spec=TASKS["yelp"])
    assert ds["label"] == [1, 0] and ds["text_a"][1] == 'Cold.\nNever again, "sorry"'
    with pytest.raises(DataError, match=r"line 1: unknown label '0'.*no header"):
        read_cls_file(_write(tmp_path, "bad.csv", '"0","text"\n'), spec=TASKS["yelp"])
    # MNLI: GLUE's many-column TSV, string gold labels
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    p = _write(tmp_path, "dev_matched.tsv", header + '0\t1\t2\tfiction\tHe said "hi.\tHe spoke.\tentailment\tneutral\n')
    assert read_cls_file(p, spec=TASKS["mnli"])[0] == {"text_a": 'He said "hi.', "text_b": "He spoke.", "label": 1}
    # QQP: GLUE/HF readers skip its few short rows; so do we
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    p = _write(tmp_path, "qqp.tsv", header + "1\t1\t2\tWhy?\tHow?\t0\n2\t3\n")
    assert read_cls_file(p, spec=TASKS["qqp"])["label"] == [0]


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
