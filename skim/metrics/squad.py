"""Official SQuAD v1.1 / v2.0 scoring as pure functions (no file I/O, no printing).

This module reproduces the logic of the official evaluation scripts

* ``evaluate-v1.1.py`` -> :func:`squad_v1_scores`
* ``evaluate-v2.0.py`` -> :func:`squad_v2_scores`

so that numbers logged during training are directly comparable with published SQuAD results.

Known divergence from ``torchmetrics.functional.text.squad``
------------------------------------------------------------
torchmetrics claims to implement SQuAD v1.1 but its F1 uses the *v2.0* rule: when either the prediction or
the gold answer normalises to zero tokens it returns ``int(pred_tokens == gold_tokens)``. The official v1.1
script has no such branch: it returns 0 whenever the two sides share no token (``num_same == 0``), which
includes the case where both are empty. Consequently an empty prediction against the gold answer ``"the"``
(which normalises to ``""``) scores F1 = 1 in torchmetrics but F1 = 0 officially (EM is 1 in both, since the
normalised strings are equal). We follow the official script.

Deliberate, documented deviations from the scripts (they only concern inputs the scripts crash on or
silently mis-count):

* An empty ``references`` mapping returns zeros with ``total == 0`` instead of dividing by zero.
* v2.0: the official script drops reference ids without a prediction from ``total`` (and then raises a
  ``KeyError`` when building the HasAns/NoAns splits). Here they score 0 and stay in every denominator,
  exactly like v1.1; they are counted in ``"missing"``. With no missing predictions the results are identical.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = [
    "normalize_answer",
    "squad_v1_scores",
    "squad_v2_scores",
    "v1_exact_match",
    "v1_f1",
    "v2_exact",
    "v2_f1",
]

# the v2 scores of one kind of question, each with whether that kind is answerable: present only where the
# evaluation holds questions of that kind
V2_SPLIT_METRICS = {"HasAns_exact": True, "HasAns_f1": True, "NoAns_exact": False, "NoAns_f1": False}

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (identical in v1.1 and v2.0)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


# ----------------------------------------------------------------------------------------------- v1.1
def v1_exact_match(prediction: str, ground_truth: str) -> int:
    """``exact_match_score`` of evaluate-v1.1.py (as int instead of bool)."""
    return int(normalize_answer(prediction) == normalize_answer(ground_truth))


def v1_f1(prediction: str, ground_truth: str) -> float:
    """``f1_score`` of evaluate-v1.1.py: no shared token -> 0, even when both sides are empty."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _check_answers(qid: str, answers: Sequence[str]) -> None:
    # A bare string is a Sequence[str] too; iterating it would silently score against single characters.
    if isinstance(answers, str):
        raise TypeError(f"references[{qid!r}] must be a sequence of answer strings, got a str")


def _warn_missing(missing: list[str]) -> None:
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        warnings.warn(
            f"{len(missing)} unanswered question(s) will receive score 0: {shown}", RuntimeWarning, stacklevel=3
        )


def squad_v1_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict:
    """Score predictions like evaluate-v1.1.py.

    Args:
        predictions: question id -> predicted answer text. Ids absent from ``references`` are ignored.
        references: question id -> gold answer texts (at least one per question, as in SQuAD v1.1).

    Returns:
        ``{"exact_match": float, "f1": float, "total": int, "missing": int}``, scores on a 0-100 scale.
    """
    exact_match = 0.0
    f1 = 0.0
    missing: list[str] = []
    for qid, ground_truths in references.items():
        _check_answers(qid, ground_truths)
        if qid not in predictions:
            missing.append(qid)
            continue
        if len(ground_truths) == 0:
            # The official script crashes here (max of an empty list); v1.1 has no unanswerable questions.
            raise ValueError(f"Question {qid!r} has no gold answer; use squad_v2_scores for unanswerable questions")
        prediction = predictions[qid]
        exact_match += max(v1_exact_match(prediction, gt) for gt in ground_truths)
        f1 += max(v1_f1(prediction, gt) for gt in ground_truths)
    _warn_missing(missing)
    total = len(references)
    scale = 100.0 / total if total else 0.0
    return {"exact_match": exact_match * scale, "f1": f1 * scale, "total": total, "missing": len(missing)}


# ----------------------------------------------------------------------------------------------- v2.0
def _get_tokens(s: str) -> list[str]:
    if not s:
        return []
    return normalize_answer(s).split()


def v2_exact(a_gold: str, a_pred: str) -> int:
    """``compute_exact`` of evaluate-v2.0.py."""
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def v2_f1(a_gold: str, a_pred: str) -> float:
    """``compute_f1`` of evaluate-v2.0.py: if either side has no token, F1 is 1 iff both have none."""
    gold_toks = _get_tokens(a_gold)
    pred_toks = _get_tokens(a_pred)
    common = Counter(gold_toks) & Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return float(gold_toks == pred_toks)
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _find_best_thresh(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
    total: int,
) -> tuple[float, float]:
    """``find_best_thresh`` of evaluate-v2.0.py.

    Sweeps the threshold upwards: start with every question predicted unanswerable, then switch questions to
    "answered" in increasing na_prob order. Missing predictions never score, so they are left out of the
    starting count; the denominator is ``total`` (identical to the script when nothing is missing).
    """
    cur_score = float(sum(1 for k, has in qid_to_has_ans.items() if not has and k in scores))
    best_score = cur_score
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            # Uses the raw (un-normalised) prediction string, like the official script.
            diff = -1.0 if predictions[qid] else 0.0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / total, float(best_thresh)


def squad_v2_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """Score predictions like evaluate-v2.0.py.

    Args:
        predictions: question id -> predicted answer text (``""`` = predicted unanswerable). Ids absent from
            ``references`` are ignored.
        references: question id -> gold answer texts; an empty sequence marks an unanswerable question.
        na_probs: optional question id -> no-answer probability/odds (e.g. the ``null_odds`` of post-processing).
            Must cover every predicted reference id. Without it every na_prob is 0 (as in the script).
        na_prob_thresh: questions with ``na_prob > na_prob_thresh`` are treated as predicted unanswerable.

    Returns:
        ``exact`` (plus alias ``exact_match``), ``f1``, ``total``, ``missing``; ``HasAns_*`` / ``NoAns_*``
        (``exact``, ``f1``, ``total``) when the subset is non-empty; ``best_exact``, ``best_exact_thresh``,
        ``best_f1``, ``best_f1_thresh`` when ``na_probs`` is given. Scores on a 0-100 scale.
    """
    qid_to_has_ans: dict[str, bool] = {}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    missing: list[str] = []
    for qid, answers in references.items():
        _check_answers(qid, answers)
        # "Has answer" looks at the raw list, before dropping answers that normalise to empty (as the script).
        qid_to_has_ans[qid] = len(answers) > 0
        gold_answers = [a for a in answers if normalize_answer(a)]
        if not gold_answers:
            # For unanswerable questions, the only correct answer is the empty string.
            gold_answers = [""]
        if qid not in predictions:
            missing.append(qid)
            continue
        a_pred = predictions[qid]
        exact_raw[qid] = float(max(v2_exact(a, a_pred) for a in gold_answers))
        f1_raw[qid] = max(v2_f1(a, a_pred) for a in gold_answers)
    _warn_missing(missing)

    if na_probs is not None:
        uncovered = [qid for qid in exact_raw if qid not in na_probs]
        if uncovered:
            raise ValueError(f"na_probs is missing {len(uncovered)} predicted question id(s), e.g. {uncovered[:5]}")
        probs: Mapping[str, float] = na_probs
    else:
        probs = {qid: 0.0 for qid in exact_raw}

    def apply_threshold(scores: Mapping[str, float]) -> dict[str, float]:
        # Missing predictions score 0 (see module docstring); thresholded ones score 1 iff truly unanswerable.
        out = {qid: 0.0 for qid in missing}
        for qid, s in scores.items():
            out[qid] = float(not qid_to_has_ans[qid]) if probs[qid] > na_prob_thresh else s
        return out

    exact_thresh = apply_threshold(exact_raw)
    f1_thresh = apply_threshold(f1_raw)

    def eval_dict(qids: Sequence[str]) -> dict:
        total = len(qids)
        scale = 100.0 / total if total else 0.0
        return {
            "exact": scale * sum(exact_thresh[k] for k in qids),
            "f1": scale * sum(f1_thresh[k] for k in qids),
            "total": total,
        }

    all_qids = list(references)
    out = eval_dict(all_qids)
    out["exact_match"] = out["exact"]
    out["missing"] = len(missing)
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    if has_ans_qids:
        out.update({f"HasAns_{k}": v for k, v in eval_dict(has_ans_qids).items()})
    if no_ans_qids:
        out.update({f"NoAns_{k}": v for k, v in eval_dict(no_ans_qids).items()})
    if na_probs is not None and all_qids:
        out["best_exact"], out["best_exact_thresh"] = _find_best_thresh(
            predictions, exact_raw, na_probs, qid_to_has_ans, len(all_qids)
        )
        out["best_f1"], out["best_f1_thresh"] = _find_best_thresh(
            predictions, f1_raw, na_probs, qid_to_has_ans, len(all_qids)
        )
    return out
