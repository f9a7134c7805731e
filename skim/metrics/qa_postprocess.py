"""N-best post-processing of extractive-QA logits into answer strings.

:func:`postprocess_qa_predictions` reproduces the semantics of HuggingFace's
``examples/pytorch/question-answering/utils_qa.py::postprocess_qa_predictions`` (candidate generation, tie
order, n-best truncation, the "empty" dummy, null-score handling), vectorised per feature with numpy so that
10k examples take about a second instead of looping over n_best**2 Python dicts.

Differences from HF, all on inputs where HF misbehaves or that HF does not produce:

* Logit positions ``>= len(offset_mapping)`` (padding from gathering variable-length batches) are dropped
  *before* the top-k selection, so padding can never crowd real tokens out of the top ``n_best_size``. Whenever
  no padding position would have made HF's top-k (always the case with the usual ``-100`` fill) the result is
  identical to HF, including the order of tied logits.
* An example without any feature gets prediction ``""``, an empty n-best list and (v2) null odds ``+inf``
  (HF would crash or reuse the previous example's null score).
* v2 with candidates whose texts are all empty (HF raises ``IndexError``) gets the same "empty" dummy that HF
  inserts when there is no candidate at all.
* Probabilities are computed in float64; n-best entries additionally carry ``"offsets"`` (character span in
  the context as ``[start, end]``, ``None`` for the dummy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["merge_feature_logits", "postprocess_qa_predictions"]


@dataclass
class QAEvaluationConfig:
    """``evaluation.*`` of extractive QA: the n-best post-processing and whether predictions are written."""

    MINIMUM: ClassVar[dict[str, int]] = {"n_best_size": 1, "max_answer_length": 1}

    n_best_size: int = 20
    max_answer_length: int = 30
    #: SQuAD v2: predict "no answer" when its score beats the best span's by more than this
    null_score_diff_threshold: float = 0.0
    #: ``predictions.json`` (question id -> answer) in the run directory
    write_predictions: bool = True


def _is_valid_offset(offset: Any) -> bool:
    # HF marks non-context tokens with None; anything that is not a (start, end) pair is unusable as well.
    if offset is None or isinstance(offset, (str, bytes)):
        return False
    try:
        return len(offset) >= 2
    except TypeError:
        return False


def _feature_candidates(
    start_row: np.ndarray,
    end_row: np.ndarray,
    offset_mapping: Sequence[Any],
    token_is_max_context: Mapping | None,
    n_best_size: int,
    max_answer_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Valid (start, end) spans of one feature, in HF's generation order (start-major over top-k indices).

    Returns scores, start logits, end logits, char starts, char ends.
    """
    n = len(offset_mapping)
    # Argsort the full row exactly like HF (so ties between equal logits are broken identically), then drop
    # padding positions before taking the top-k so that padding can never crowd out real tokens.
    start_order = np.argsort(start_row)
    end_order = np.argsort(end_row)
    start_idx = start_order[start_order < n][-1 : -n_best_size - 1 : -1]
    end_idx = end_order[end_order < n][-1 : -n_best_size - 1 : -1]

    start_ok = [_is_valid_offset(offset_mapping[i]) for i in start_idx.tolist()]
    if token_is_max_context is not None:
        start_ok = [
            ok and bool(token_is_max_context.get(str(i), token_is_max_context.get(i, False)))
            for ok, i in zip(start_ok, start_idx.tolist())
        ]
    end_ok = [_is_valid_offset(offset_mapping[i]) for i in end_idx.tolist()]
    start_idx = start_idx[np.asarray(start_ok, dtype=bool)]
    end_idx = end_idx[np.asarray(end_ok, dtype=bool)]

    length = end_idx[None, :] - start_idx[:, None]  # span length - 1
    si, ej = np.nonzero((length >= 0) & (length < max_answer_length))  # row-major == HF loop order
    # Character offsets are looked up once per selected index (<= n_best_size), not once per span.
    start_chars = np.array([offset_mapping[i][0] for i in start_idx.tolist()], dtype=np.int64)
    end_chars = np.array([offset_mapping[i][1] for i in end_idx.tolist()], dtype=np.int64)
    s_logit = start_row[start_idx[si]]
    e_logit = end_row[end_idx[ej]]
    return s_logit + e_logit, s_logit, e_logit, start_chars[si], end_chars[ej]


def postprocess_qa_predictions(
    examples: Sequence[Mapping],
    features: Sequence[Mapping],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, list[dict]], dict[str, float]]:
    """Turn per-feature start/end logits into one answer string per example.

    Args:
        examples: each with ``"id"`` and ``"context"``; their order is the output order.
        features: each with ``"example_id"`` and ``"offset_mapping"`` (``(start, end)`` character pairs, ``None``
            for tokens outside the context); optionally HF's ``"token_is_max_context"``.
        start_logits, end_logits: ``[num_features, seq_len]``; positions beyond ``len(offset_mapping)`` are
            padding and ignored.
        version_2_with_negative: SQuAD v2 mode (the null answer, scored at index 0, competes with spans).
        n_best_size: number of top start/end indices per feature and of n-best entries kept.
        max_answer_length: maximum span length in tokens.
        null_score_diff_threshold: predict ``""`` when ``null_score - best_span_score`` exceeds it (v2 only).

    Returns:
        ``(predictions, nbest, null_odds)``: id -> answer text; id -> list of ``{"text", "probability",
        "start_logit", "end_logit", "offsets"}`` sorted by score; id -> ``null_score - best_span_score``
        (v2 only, empty dict for v1). All values are plain Python types.
    """
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    if start_logits.ndim != 2 or start_logits.shape != end_logits.shape:
        raise ValueError(
            f"start/end logits must be 2-D arrays of equal shape, got {start_logits.shape} and {end_logits.shape}"
        )
    if start_logits.shape[0] != len(features):
        raise ValueError(f"Got {start_logits.shape[0]} logit rows for {len(features)} features")

    examples = list(examples)  # one pass over possibly slow row access (e.g. datasets.Dataset)
    example_ids = {ex["id"] for ex in examples}
    features_per_example: dict[str, list[int]] = {}
    offsets_per_feature: list[Sequence[Any]] = []
    max_context_per_feature: list[Mapping | None] = []
    for i, feature in enumerate(features):
        ex_id = feature["example_id"]
        if ex_id not in example_ids:
            raise ValueError(f"Feature {i} refers to unknown example id {ex_id!r}")
        features_per_example.setdefault(ex_id, []).append(i)
        offsets_per_feature.append(feature["offset_mapping"])
        max_context_per_feature.append(feature.get("token_is_max_context"))

    all_predictions: dict[str, str] = {}
    all_nbest: dict[str, list[dict]] = {}
    null_odds: dict[str, float] = {}

    for example in examples:
        ex_id = example["id"]
        feature_indices = features_per_example.get(ex_id, [])
        if not feature_indices:
            all_predictions[ex_id] = ""
            all_nbest[ex_id] = []
            if version_2_with_negative:
                null_odds[ex_id] = math.inf  # nothing to answer from: as "no answer" as it gets
            continue

        parts = []
        min_null: tuple[Any, Any, Any] | None = None  # (score, start_logit, end_logit)
        for fi in feature_indices:
            s_row, e_row = start_logits[fi], end_logits[fi]
            feature_null = s_row[0] + e_row[0]
            # Strict '>' keeps the first feature on ties, like HF.
            if min_null is None or min_null[0] > feature_null:
                min_null = (feature_null, s_row[0], e_row[0])
            parts.append(
                _feature_candidates(
                    s_row, e_row, offsets_per_feature[fi], max_context_per_feature[fi], n_best_size, max_answer_length
                )
            )
        assert min_null is not None
        scores, s_logit, e_logit, char_start, char_end = (
            parts[0] if len(parts) == 1 else tuple(np.concatenate(cols) for cols in zip(*parts))
        )
        null_pos = -1
        if version_2_with_negative:
            # HF appends the null candidate after all spans (so it loses score ties against them).
            null_pos = len(scores)
            scores = np.append(scores, min_null[0])
            s_logit = np.append(s_logit, min_null[1])
            e_logit = np.append(e_logit, min_null[2])
            char_start = np.append(char_start, 0)
            char_end = np.append(char_end, 0)

        # Stable sort on negated scores == Python's sorted(reverse=True), which HF uses.
        order = np.argsort(-scores, kind="stable")[:n_best_size]
        if version_2_with_negative and not np.any((char_start[order] == 0) & (char_end[order] == 0)):
            # Add back the null prediction when it fell out of the n-best (HF checks offsets == (0, 0)).
            order = np.append(order, null_pos)

        context = example["context"]
        # Bulk .tolist() conversions: per-element numpy scalar access dominates the runtime otherwise.
        preds: list[dict] = [
            {"text": context[cs:ce], "score": sc, "start_logit": sl, "end_logit": el, "offsets": [cs, ce]}
            for cs, ce, sc, sl, el in zip(
                char_start[order].tolist(),
                char_end[order].tolist(),
                scores[order].tolist(),
                s_logit[order].tolist(),
                e_logit[order].tolist(),
            )
        ]

        # HF's guard for "no non-null prediction"; also applied when v2 would otherwise find no non-empty text.
        if (
            len(preds) == 0
            or (len(preds) == 1 and preds[0]["text"] == "")
            or (version_2_with_negative and all(p["text"] == "" for p in preds))
        ):
            preds.insert(0, {"text": "empty", "score": 0.0, "start_logit": 0.0, "end_logit": 0.0, "offsets": None})

        score_arr = np.array([p.pop("score") for p in preds], dtype=np.float64)
        exp_scores = np.exp(score_arr - score_arr.max())
        probs = exp_scores / exp_scores.sum()

        if not version_2_with_negative:
            all_predictions[ex_id] = preds[0]["text"]
        else:
            best_non_null = next(p for p in preds if p["text"] != "")
            # Same dtype arithmetic as HF (float32 logits stay float32 until the final cast).
            to_dtype = start_logits.dtype.type
            score_diff = float(
                min_null[0] - to_dtype(best_non_null["start_logit"]) - to_dtype(best_non_null["end_logit"])
            )
            null_odds[ex_id] = score_diff
            all_predictions[ex_id] = "" if score_diff > null_score_diff_threshold else best_non_null["text"]

        all_nbest[ex_id] = [
            {
                "text": p["text"],
                "probability": prob,
                "start_logit": float(p["start_logit"]),
                "end_logit": float(p["end_logit"]),
                "offsets": p["offsets"],
            }
            for p, prob in zip(preds, probs.tolist())
        ]

    return all_predictions, all_nbest, null_odds


def merge_feature_logits(
    feature_indices: np.ndarray,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    num_features: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Reassemble logits gathered from all ranks into ``[num_features, width]`` arrays in feature order.

    ``DistributedSampler`` pads the dataset by repeating samples, so an index may occur several times; the
    first occurrence wins. Every feature in ``range(num_features)`` must be present, otherwise post-processing
    would silently score examples as unanswered.

    Raises:
        ValueError: on shape mismatch, out-of-range indices, or missing features (their indices are listed).
    """
    idx = np.asarray(feature_indices).reshape(-1)
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"feature_indices must be integers, got dtype {idx.dtype}")
    if start_logits.ndim != 2 or start_logits.shape != end_logits.shape or start_logits.shape[0] != idx.shape[0]:
        raise ValueError(
            f"Expected start/end logits of shape [{idx.shape[0]}, width], got {start_logits.shape} "
            f"and {end_logits.shape}"
        )
    out_of_range = idx[(idx < 0) | (idx >= num_features)]
    if out_of_range.size:
        raise ValueError(
            f"Feature indices out of range [0, {num_features}): {np.unique(out_of_range)[:20].tolist()}"
        )
    unique, first = np.unique(idx.astype(np.int64), return_index=True)  # first occurrence of each index
    if unique.size != num_features:
        missing = np.setdiff1d(np.arange(num_features), unique)
        shown = missing[:20].tolist()
        more = f" (and {missing.size - 20} more)" if missing.size > 20 else ""
        raise ValueError(f"{missing.size} feature(s) missing from gathered logits: {shown}{more}")
    return start_logits[first], end_logits[first]
