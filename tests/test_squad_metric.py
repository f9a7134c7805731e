"""Official SQuAD v1.1 / v2.0 scoring: hand-computed cases and parity with torchmetrics."""

from __future__ import annotations

import math

import pytest

from skim.metrics.squad import normalize_answer, squad_v1_scores, squad_v2_scores, v1_f1, v2_f1


def _v1(pred: str, golds: list[str]) -> dict:
    return squad_v1_scores({"q": pred}, {"q": golds})


# --------------------------------------------------------------------------------------------- normalize
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  New \t York\n", "new york"),
        ("Eiffel-Tower!", "eiffeltower"),  # punctuation is deleted, not replaced by a space
        ("an apple a day", "apple day"),
        ("Athens theater", "athens theater"),  # articles only as whole words
        ("the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


# ------------------------------------------------------------------------------------------------- v1.1
@pytest.mark.parametrize(
    ("pred", "golds", "em", "f1"),
    [
        ("The Eiffel Tower", ["Eiffel Tower"], 100.0, 100.0),  # articles
        ("Paris.", ["Paris"], 100.0, 100.0),  # punctuation
        ("  New   York\n", ["New York"], 100.0, 100.0),  # whitespace
        ("NEW YORK", ["new york"], 100.0, 100.0),  # case
        ("Eiffel-Tower", ["Eiffel Tower"], 0.0, 0.0),  # "eiffeltower" shares no token with "eiffel tower"
        # "in year 1990" vs "1990": same=1, P=1/3, R=1 -> F1 = 2*(1/3)/(4/3) = 1/2
        ("in the year 1990", ["1990"], 0.0, 50.0),
        # "cat cat" vs "cat": Counter intersection gives same=1, P=1/2, R=1 -> F1 = 2/3
        ("the cat cat", ["cat"], 0.0, 200.0 / 3.0),
        # max over golds: vs "broncos" P=1/3 R=1 F1=1/2; vs "denver broncos" P=2/3 R=1 F1=0.8
        ("Denver Broncos team", ["Broncos", "Denver Broncos"], 0.0, 80.0),
        # EM and F1 maxima may come from different gold answers
        ("Denver Broncos team", ["Denver Broncos team.", "x"], 100.0, 100.0),
        ("Broncos", ["Carolina Panthers", "the Broncos"], 100.0, 100.0),
        # Both sides normalise to "": EM is 1 (strings equal) but official v1.1 F1 is 0 (num_same == 0).
        ("", ["the"], 100.0, 0.0),
        ("a", ["the"], 100.0, 0.0),
        ("", ["Paris"], 0.0, 0.0),
    ],
)
def test_v1_single_question(pred: str, golds: list[str], em: float, f1: float) -> None:
    out = _v1(pred, golds)
    assert out["exact_match"] == pytest.approx(em)
    assert out["f1"] == pytest.approx(f1)
    assert out["total"] == 1
    assert out["missing"] == 0


def test_v1_aggregate_missing_and_extra_predictions() -> None:
    references = {"a": ["Denver Broncos"], "b": ["1990"], "c": ["Paris"], "d": ["Rome"]}
    predictions = {"a": "the Denver Broncos", "b": "in the year 1990", "c": "London", "zzz": "ignored"}
    with pytest.warns(RuntimeWarning, match="unanswered question"):
        out = squad_v1_scores(predictions, references)
    # EM: a=1, b=0, c=0, d (missing)=0 -> 25; F1: 1 + 0.5 + 0 + 0 -> 1.5 / 4 = 37.5
    assert out == {"exact_match": 25.0, "f1": 37.5, "total": 4, "missing": 1}


def test_v1_rejects_bare_string_answers() -> None:
    with pytest.raises(TypeError):
        squad_v1_scores({"q": "Paris"}, {"q": "Paris"})  # type: ignore[dict-item]


def test_v1_empty_references() -> None:
    assert squad_v1_scores({}, {}) == {"exact_match": 0.0, "f1": 0.0, "total": 0, "missing": 0}


# ------------------------------------------------------------------------------------ torchmetrics parity
def _torchmetrics_squad(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    from torchmetrics.functional.text.squad import squad

    preds = [{"prediction_text": text, "id": qid} for qid, text in predictions.items()]
    target = [
        {"answers": {"answer_start": [0] * len(golds), "text": list(golds)}, "id": qid}
        for qid, golds in references.items()
    ]
    return {k: float(v) for k, v in squad(preds, target).items()}


def test_parity_with_torchmetrics_on_ordinary_cases() -> None:
    references = {
        "1": ["Denver Broncos", "The Broncos"],
        "2": ["1990"],
        "3": ["Saint Bernadette Soubirous"],
        "4": ["a copper statue of Christ"],
        "5": ["the Main Building", "Main Building"],
        "6": ["September 1876"],
        "7": ["Eiffel Tower"],
    }
    predictions = {
        "1": "Broncos",
        "2": "in the year 1990",
        "3": "Bernadette Soubirous!",
        "4": "copper statue",
        "5": "The main building.",
        "6": "1876",
        "7": "Eiffel-Tower",
    }
    ours = squad_v1_scores(predictions, references)
    theirs = _torchmetrics_squad(predictions, references)
    assert ours["exact_match"] == pytest.approx(theirs["exact_match"], abs=1e-4)
    assert ours["f1"] == pytest.approx(theirs["f1"], abs=1e-4)
    assert 0.0 < ours["f1"] < 100.0  # make sure the cases are not trivial


def test_documented_divergence_from_torchmetrics_on_empty_tokens() -> None:
    predictions, references = {"x": ""}, {"x": ["the"]}
    theirs = _torchmetrics_squad(predictions, references)
    ours = squad_v1_scores(predictions, references)
    # torchmetrics applies the v2.0 "both empty -> 1" rule; the official v1.1 script gives 0.
    assert theirs["f1"] == pytest.approx(100.0)
    assert ours["f1"] == 0.0
    assert theirs["exact_match"] == pytest.approx(100.0)
    assert ours["exact_match"] == 100.0


def test_v1_and_v2_f1_rules_differ_only_on_empty_token_lists() -> None:
    assert v1_f1("", "the") == 0.0
    assert v2_f1("the", "") == 1.0
    assert v1_f1("in the year 1990", "1990") == v2_f1("1990", "in the year 1990") == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------- v2.0
def test_v2_unanswerable_with_empty_prediction() -> None:
    out = squad_v2_scores({"a": "Denver Broncos", "b": ""}, {"a": ["Denver Broncos"], "b": []})
    assert out["exact"] == out["exact_match"] == 100.0
    assert out["f1"] == 100.0
    assert out["total"] == 2
    assert (out["HasAns_exact"], out["HasAns_f1"], out["HasAns_total"]) == (100.0, 100.0, 1)
    assert (out["NoAns_exact"], out["NoAns_f1"], out["NoAns_total"]) == (100.0, 100.0, 1)
    assert "best_exact" not in out  # only with na_probs


def test_v2_unanswerable_with_non_empty_prediction_and_splits() -> None:
    references = {"a": ["Denver Broncos"], "b": [], "c": ["1990"]}
    predictions = {"a": "Broncos", "b": "Paris", "c": "in the year 1990"}
    out = squad_v2_scores(predictions, references)
    # a: EM 0, F1 = 2*(1)(1/2)/(3/2) = 2/3; b: 0/0; c: EM 0, F1 1/2
    assert out["exact"] == 0.0
    assert out["f1"] == pytest.approx(100.0 * (2 / 3 + 0.5) / 3)
    assert out["HasAns_total"] == 2
    assert out["HasAns_f1"] == pytest.approx(100.0 * (2 / 3 + 0.5) / 2)
    assert (out["NoAns_exact"], out["NoAns_f1"], out["NoAns_total"]) == (0.0, 0.0, 1)


def test_v2_only_has_ans_subset_reported_when_no_unanswerable() -> None:
    out = squad_v2_scores({"a": "x"}, {"a": ["x"]})
    assert out["HasAns_total"] == 1
    assert not any(k.startswith("NoAns") for k in out)


def test_v2_gold_normalising_to_empty_is_dropped_but_question_counts_as_has_ans() -> None:
    # evaluate-v2.0.py: has_ans looks at the raw list, gold answers that normalise to "" are dropped,
    # leaving [""] as the only correct answer.
    out = squad_v2_scores({"q": ""}, {"q": ["the"]})
    assert (out["exact"], out["f1"]) == (100.0, 100.0)
    assert out["HasAns_total"] == 1
    assert "NoAns_total" not in out


def test_v2_na_prob_threshold() -> None:
    references = {"a": ["Denver Broncos"], "b": []}
    predictions = {"a": "Denver Broncos", "b": "Paris"}
    na_probs = {"a": 0.2, "b": 0.9}
    # Default threshold 1.0: nothing is forced to no-answer -> a=1, b=0.
    assert squad_v2_scores(predictions, references, na_probs)["exact"] == 50.0
    # 0.5: b is forced to no-answer (correct) -> 100.
    assert squad_v2_scores(predictions, references, na_probs, na_prob_thresh=0.5)["exact"] == 100.0
    # 0.1: both forced; a has an answer so it scores 0 -> 50.
    out = squad_v2_scores(predictions, references, na_probs, na_prob_thresh=0.1)
    assert (out["exact"], out["f1"], out["HasAns_exact"], out["NoAns_exact"]) == (50.0, 50.0, 0.0, 100.0)


def test_v2_best_thresholds() -> None:
    references = {"a": ["Denver Broncos"], "b": [], "c": ["1990"]}
    predictions = {"a": "Denver Broncos", "b": "Paris", "c": "in the year 1990"}
    na_probs = {"a": 0.2, "b": 0.9, "c": 0.5}
    out = squad_v2_scores(predictions, references, na_probs)
    # Thresholded at 1.0: EM (1+0+0)/3, F1 (1+0+0.5)/3.
    assert out["exact"] == pytest.approx(100.0 / 3)
    assert out["f1"] == pytest.approx(50.0)
    # Sweep in na_prob order a(0.2), c(0.5), b(0.9), starting from 1 (= #NoAns):
    #   exact: 1 -> 2 (a, thresh .2) -> 2 (c) -> 1 (b answered "Paris": -1)  => 2/3, thresh 0.2
    #   f1:    1 -> 2 (a, thresh .2) -> 2.5 (c, thresh .5) -> 1.5 (b)         => 2.5/3, thresh 0.5
    assert out["best_exact"] == pytest.approx(200.0 / 3)
    assert out["best_exact_thresh"] == 0.2
    assert out["best_f1"] == pytest.approx(250.0 / 3)
    assert out["best_f1_thresh"] == 0.5


def test_v2_missing_prediction_and_na_probs_coverage() -> None:
    references = {"a": ["Denver"], "b": []}
    with pytest.warns(RuntimeWarning):
        out = squad_v2_scores({"a": "Denver"}, references)
    assert (out["exact"], out["total"], out["missing"], out["NoAns_exact"]) == (50.0, 2, 1, 0.0)
    with pytest.raises(ValueError, match="na_probs"):
        squad_v2_scores({"a": "Denver", "b": ""}, references, na_probs={"a": 0.1})


def test_v2_all_values_are_finite_python_numbers() -> None:
    out = squad_v2_scores({"a": "x", "b": ""}, {"a": ["x"], "b": []}, {"a": 0.0, "b": 1.0})
    for key, value in out.items():
        assert type(value) in (int, float), key
        assert math.isfinite(value)
