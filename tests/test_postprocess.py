"""N-best post-processing (HF utils_qa semantics) and distributed logit merging."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from skim.metrics.qa_postprocess import merge_feature_logits, postprocess_qa_predictions

CONTEXT = "The quick brown fox jumps over the lazy dog"
WORDS = CONTEXT.split()
# Token layout of every feature: [CLS] q1 q2 [SEP] <context words> [SEP]; non-context offsets are None.
N_PREFIX = 4
LOW = -10.0


def _word_offsets(words: list[str]) -> list[tuple[int, int]]:
    offsets, pos = [], 0
    for w in words:
        start = CONTEXT.index(w, pos)
        offsets.append((start, start + len(w)))
        pos = start + len(w)
    return offsets


ALL_OFFSETS = _word_offsets(WORDS)


def _feature(example_id: str = "q", word_range: tuple[int, int] = (0, len(WORDS))) -> dict:
    lo, hi = word_range
    offsets = [None] * N_PREFIX + ALL_OFFSETS[lo:hi] + [None]
    return {"example_id": example_id, "offset_mapping": offsets}


def _pos(word_index: int, first_word: int = 0) -> int:
    """Token position of context word ``word_index`` in a feature starting at ``first_word``."""
    return N_PREFIX + word_index - first_word


def _logits(n_rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n_rows, width), LOW, np.float32), np.full((n_rows, width), LOW, np.float32)


WIDTH = N_PREFIX + len(WORDS) + 1  # 14
EXAMPLES = [{"id": "q", "context": CONTEXT}]


def _run(features, start, end, examples=EXAMPLES, **kwargs):
    return postprocess_qa_predictions(examples, features, start, end, **kwargs)


# ----------------------------------------------------------------------------------------------- v1 cases
def test_best_span_is_chosen_and_outputs_are_json_serialisable() -> None:
    s, e = _logits(1, WIDTH)
    s[0, _pos(2)], e[0, _pos(3)] = 4.0, 4.0  # "brown fox"
    s[0, _pos(5)], e[0, _pos(5)] = 3.0, 3.0  # "over"
    preds, nbest, null_odds = _run([_feature()], s, e)
    assert preds == {"q": "brown fox"}
    assert null_odds == {}
    best = nbest["q"][0]
    assert best["text"] == "brown fox"
    assert best["offsets"] == [10, 19]
    assert (best["start_logit"], best["end_logit"]) == (4.0, 4.0)
    assert nbest["q"][1]["text"] == "brown fox jumps over"  # 4 + 3 beats "over" (3 + 3)
    assert len(nbest["q"]) == 20
    assert [p["probability"] for p in nbest["q"]] == sorted((p["probability"] for p in nbest["q"]), reverse=True)
    assert math.isclose(sum(p["probability"] for p in nbest["q"]), 1.0, rel_tol=1e-9)
    json.dumps([preds, nbest])  # plain Python types only
    assert all(type(p["probability"]) is float and type(p["start_logit"]) is float for p in nbest["q"])


def test_span_starting_in_question_is_rejected() -> None:
    s, e = _logits(1, WIDTH)
    s[0, 2] = 10.0  # question token (offset None)
    s[0, _pos(1)] = 5.0
    e[0, _pos(3)] = 5.0
    preds, _, _ = _run([_feature()], s, e)
    assert preds["q"] == "quick brown fox"


def test_end_before_start_is_rejected() -> None:
    s, e = _logits(1, WIDTH)
    s[0, _pos(5)], e[0, _pos(1)] = 10.0, 10.0  # "over" ... "quick": end < start
    s[0, _pos(2)], e[0, _pos(3)] = 2.0, 2.0  # "brown fox" = 4, all other valid pairs score <= 0
    preds, _, _ = _run([_feature()], s, e)
    assert preds["q"] == "brown fox"


def test_too_long_span_is_rejected() -> None:
    s, e = _logits(1, WIDTH)
    s[0, _pos(0)], e[0, _pos(8)] = 5.0, 5.0  # whole context: 9 tokens
    s[0, _pos(6)], e[0, _pos(7)] = 1.0, 1.0  # "the lazy": 2 tokens
    assert _run([_feature()], s, e, max_answer_length=2)[0]["q"] == "the lazy"
    assert _run([_feature()], s, e, max_answer_length=9)[0]["q"] == CONTEXT


def test_best_span_across_two_features_of_one_example() -> None:
    features = [_feature(word_range=(0, 6)), _feature(word_range=(3, 9))]
    s, e = _logits(2, WIDTH)
    s[0, _pos(1, 0)], e[0, _pos(2, 0)] = 1.5, 1.5  # feature 0: "quick brown" = 3
    s[1, _pos(7, 3)], e[1, _pos(8, 3)] = 3.0, 3.0  # feature 1: "lazy dog" = 6
    preds, nbest, _ = _run(features, s, e)
    assert preds["q"] == "lazy dog"
    texts = [p["text"] for p in nbest["q"]]
    assert texts.index("lazy dog") < texts.index("quick brown")


def test_no_valid_span_gives_hf_empty_dummy_in_v1() -> None:
    s, e = _logits(1, WIDTH)
    preds, nbest, _ = _run([_feature()], s, e, max_answer_length=0)
    assert preds["q"] == "empty"  # HF inserts a dummy "empty" prediction with score 0
    assert nbest["q"] == [{"text": "empty", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0, "offsets": None}]


# ----------------------------------------------------------------------------------------------- v2 cases
def _null_vs_span(null: float, span: float) -> tuple[np.ndarray, np.ndarray]:
    s, e = _logits(1, WIDTH)
    s[0, 0], e[0, 0] = null / 2, null / 2
    s[0, _pos(2)], e[0, _pos(3)] = span / 2, span / 2  # "brown fox"
    return s, e


def test_v2_null_wins_when_it_beats_best_span_by_more_than_threshold() -> None:
    s, e = _null_vs_span(null=10.0, span=8.0)
    preds, nbest, null_odds = _run([_feature()], s, e, version_2_with_negative=True)
    assert preds["q"] == ""
    assert null_odds["q"] == pytest.approx(2.0)
    assert nbest["q"][0]["text"] == "" and nbest["q"][0]["offsets"] == [0, 0]
    # Raising the threshold above the score difference keeps the span.
    preds, _, _ = _run([_feature()], s, e, version_2_with_negative=True, null_score_diff_threshold=2.5)
    assert preds["q"] == "brown fox"


def test_v2_span_wins_and_null_is_added_back_to_nbest() -> None:
    s, e = _null_vs_span(null=-4.0, span=8.0)
    preds, nbest, null_odds = _run([_feature()], s, e, version_2_with_negative=True, n_best_size=1)
    assert preds["q"] == "brown fox"
    assert null_odds["q"] == pytest.approx(-12.0)
    # The null fell out of the single n-best slot and is appended afterwards, like HF.
    assert [p["text"] for p in nbest["q"]] == ["brown fox", ""]


def test_v2_null_score_is_minimum_over_features() -> None:
    features = [_feature(word_range=(0, 6)), _feature(word_range=(3, 9))]
    s, e = _logits(2, WIDTH)
    s[0, 0], e[0, 0] = 5.0, 5.0  # feature 0 null = 10
    s[1, 0], e[1, 0] = 1.0, 1.0  # feature 1 null = 2  -> min null score
    s[0, _pos(2, 0)], e[0, _pos(3, 0)] = 2.0, 2.0  # "brown fox" = 4
    preds, _, null_odds = _run(features, s, e, version_2_with_negative=True)
    assert null_odds["q"] == pytest.approx(2.0 - 4.0)
    assert preds["q"] == "brown fox"


def test_v2_without_valid_span_uses_hf_dummy() -> None:
    s, e = _logits(1, WIDTH)
    s[0, 0], e[0, 0] = 1.0, 1.0  # null = 2 > 0 (dummy's score)
    preds, nbest, null_odds = _run([_feature()], s, e, version_2_with_negative=True, max_answer_length=0)
    assert preds["q"] == ""
    assert null_odds["q"] == pytest.approx(2.0)
    assert [p["text"] for p in nbest["q"]] == ["empty", ""]


# ------------------------------------------------------------------------------------------- robustness
def test_example_without_features_and_output_order() -> None:
    examples = [{"id": "z", "context": "nothing here"}, {"id": "q", "context": CONTEXT}]
    s, e = _logits(1, WIDTH)
    s[0, _pos(2)], e[0, _pos(3)] = 4.0, 4.0
    for v2 in (False, True):
        preds, nbest, null_odds = _run([_feature()], s, e, examples=examples, version_2_with_negative=v2)
        assert list(preds) == ["z", "q"] and list(nbest) == ["z", "q"]
        assert preds == {"z": "", "q": "brown fox"}
        assert nbest["z"] == []
        if v2:
            assert null_odds["z"] == math.inf
        else:
            assert null_odds == {}


def test_logits_wider_than_offset_mapping_ignore_padding() -> None:
    s, e = _logits(1, WIDTH + 6)
    s[0, WIDTH:], e[0, WIDTH:] = 100.0, 100.0  # padding positions with huge logits
    s[0, _pos(2)], e[0, _pos(3)] = 4.0, 4.0
    preds, nbest, _ = _run([_feature()], s, e, n_best_size=2)
    # Padding must neither be selected nor crowd the real tokens out of the top-2.
    assert preds["q"] == "brown fox"
    assert all(p["offsets"] is not None and p["offsets"][1] <= len(CONTEXT) for p in nbest["q"])


def test_invalid_offsets_are_rejected() -> None:
    feature = _feature()
    feature["offset_mapping"][_pos(2)] = []  # malformed entry: treated like None
    s, e = _logits(1, WIDTH)
    s[0, _pos(2)], e[0, _pos(3)] = 6.0, 6.0
    s[0, _pos(4)], e[0, _pos(4)] = 1.0, 1.0  # "jumps" = 2, the best span not starting at the bad entry
    assert _run([_feature()], s, e)[0]["q"] == "brown fox"
    assert _run([feature], s, e)[0]["q"] == "jumps"


def test_shape_and_id_validation() -> None:
    s, e = _logits(2, WIDTH)
    with pytest.raises(ValueError, match="features"):
        _run([_feature()], s, e)
    with pytest.raises(ValueError, match="unknown example id"):
        _run([_feature("nope"), _feature()], s, e)


# -------------------------------------------------------------------------------------- distributed merge
def test_merge_feature_logits_orders_and_deduplicates() -> None:
    idx = np.array([2, 0, 1, 0, 2])  # DistributedSampler padding repeats 0 and 2
    start = np.array([[2, 2], [0, 0], [1, 1], [9, 9], [8, 8]], dtype=np.float32)
    end = -start
    s, e = merge_feature_logits(idx, start, end, num_features=3)
    np.testing.assert_array_equal(s, [[0, 0], [1, 1], [2, 2]])  # first occurrence wins
    np.testing.assert_array_equal(e, -s)


def test_merge_feature_logits_missing_and_out_of_range() -> None:
    start = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"missing.*\[1, 3\]"):
        merge_feature_logits(np.array([0, 2]), start, start, num_features=4)
    with pytest.raises(ValueError, match="out of range"):
        merge_feature_logits(np.array([0, 5]), start, start, num_features=2)
    with pytest.raises(ValueError, match="out of range"):
        merge_feature_logits(np.array([0, -1]), start, start, num_features=2)
    with pytest.raises(ValueError, match="shape"):
        merge_feature_logits(np.array([0, 1, 2]), start, start, num_features=3)
