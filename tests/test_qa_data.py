"""QA featurisation on the real SQuAD dev file: answers round-trip through offsets, caching, padding policies."""

from __future__ import annotations

import os

import pytest
import torch

from skim.data.base import collate
from skim.data.qa_datamodule import QADataModule, featurize
from skim.data.qa_sources import load_qa
from skim.metrics.squad import normalize_answer


def _datamodule(minilm_path, squad_dev, tmp_path, **kw):
    return QADataModule(
        tokenizer=minilm_path,
        hub_name=None,
        train_file=str(squad_dev),
        validation_file=str(squad_dev),
        cache_dir=str(tmp_path / "cache"),
        **kw,
    )


def test_every_dev_answer_is_recoverable_from_feature_offsets(minilm_path, squad_dev):
    from skim.data.base import build_tokenizer

    tok = build_tokenizer(minilm_path)
    raw = load_qa(str(squad_dev), layout="squad", split="validation", require_answers=True, hub_name=None,
                  cache_dir=os.environ["SKIM_CACHE_DIR"])  # the session's cache (tests/conftest.py)
    assert len(raw) == 10570
    feats = featurize(
        raw[:],
        list(range(len(raw))),
        tokenizer=tok,
        max_seq_length=384,
        doc_stride=128,
        max_query_length=64,
        pad_to_max_length=False,
    )
    contexts, answers = raw["context"], raw["answers"]
    labelled: set[int] = set()
    exact = 0
    for s, e, ex, offsets in zip(
        feats["start_positions"], feats["end_positions"], feats["example_index"], feats["offset_mapping"]
    ):
        if s == 0 and e == 0:
            continue  # this window does not hold the answer
        start_char = answers[ex]["answer_start"][0]
        end_char = start_char + len(answers[ex]["text"][0])
        assert offsets[s][0] <= start_char < offsets[s][1] or offsets[s][0] == start_char, ex
        assert offsets[e][0] < end_char <= offsets[e][1], ex
        assert s <= e
        labelled.add(ex)
        text = contexts[ex][offsets[s][0] : offsets[e][1]]
        exact += normalize_answer(text) == normalize_answer(answers[ex]["text"][0])
    # with doc_stride 128 no SQuAD answer is truncated away from every window
    assert labelled == set(range(len(raw)))
    # token boundaries inside words (e.g. "1990s" -> "1990") make a few spans larger than the gold text
    assert exact / len(labelled) > 0.99


def test_features_are_cached(minilm_path, squad_dev, tmp_path):
    dm = _datamodule(minilm_path, squad_dev, tmp_path, max_train_samples=64, max_eval_samples=64)
    dm.setup("fit")
    assert dm.cache_hits == {"train": False, "validation": False}
    dm2 = _datamodule(minilm_path, squad_dev, tmp_path, max_train_samples=64, max_eval_samples=64)
    dm2.setup("fit")
    assert dm2.cache_hits == {"train": True, "validation": True}
    assert dm2.train_features["input_ids"] == dm.train_features["input_ids"]
    # any featurisation option is part of the key
    dm3 = _datamodule(minilm_path, squad_dev, tmp_path, max_train_samples=64, max_eval_samples=64, doc_stride=64)
    dm3.setup("fit")
    assert dm3.cache_hits["train"] is False


def test_tokenising_in_several_processes_gives_the_same_features(minilm_path, squad_dev, tmp_path):
    """data.num_proc splits the featurisation over processes (datasets' map): the same features, in the same order,
    with the global feature and example indices."""
    one = _datamodule(minilm_path, squad_dev, tmp_path, max_train_samples=48, max_eval_samples=48)
    two = _datamodule(minilm_path, squad_dev, tmp_path / "two", max_train_samples=48, max_eval_samples=48, num_proc=2)
    one.setup("fit")
    two.setup("fit")
    assert len({f["filename"] for f in two.train_features.cache_files}) == 2  # two shards: it did run in two processes
    for role in ("train_features", "eval_dataset"):
        assert getattr(two, role).to_dict() == getattr(one, role).to_dict()
    # the shards are the cache of a later run in one process (num_proc is not part of datasets' fingerprint)
    again = _datamodule(minilm_path, squad_dev, tmp_path / "two", max_train_samples=48, max_eval_samples=48)
    again.setup("fit")
    assert again.cache_hits == {"train": True, "validation": True}


@pytest.mark.parametrize("padding", ["dynamic", "max_length"])
def test_padding_policy(minilm_path, squad_dev, tmp_path, padding):
    dm = _datamodule(
        minilm_path, squad_dev, tmp_path, max_train_samples=40, max_eval_samples=40, padding=padding, max_seq_length=256
    )
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    if padding == "max_length":
        assert batch["input_ids"].shape[1] == 256
    else:
        assert batch["input_ids"].shape[1] == int(lengths.max()) <= 256
    # protect_mask marks [CLS], question and [SEP] only
    assert (batch["protect_mask"][:, 0] == 1).all()
    assert (batch["protect_mask"] <= batch["attention_mask"]).all()
    assert dm.describe()["padding"] == padding


def test_collate_pads_to_batch_max():
    feats = [
        {
            "input_ids": [1, 2, 3],
            "attention_mask": [1, 1, 1],
            "token_type_ids": [0, 0, 0],
            "protect_mask": [1, 0, 0],
            "start_positions": 1,
            "end_positions": 2,
            "example_index": 0,
            "feature_index": 0,
        },
        {
            "input_ids": [1, 2],
            "attention_mask": [1, 1],
            "token_type_ids": [0, 0],
            "protect_mask": [1, 0],
            "start_positions": 0,
            "end_positions": 0,
            "example_index": 1,
            "feature_index": 1,
        },
    ]
    batch = collate(feats, scalars=QADataModule.scalar_columns, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [1, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["start_positions"].tolist() == [1, 0] and batch["feature_index"].dtype == torch.long
    assert collate(feats, scalars=QADataModule.scalar_columns, pad_to=5)["input_ids"].shape == (2, 5)
