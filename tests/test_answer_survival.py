"""What skimming left of the gold answers (``skim.metrics.answers``): answer tokens entering each layer and answers
whose first and last tokens reached the output, counted on real keep decisions (truncation to a known budget)."""

from __future__ import annotations

import math

import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.metrics.answers import answer_recall, answer_survival
from skim.state import EncoderOutput
from skim.strategies import build_strategy
from tests.conftest import ragged_batch, tiny_bert


def test_answer_survival_counts_the_gold_answer_tokens_each_layer_keeps():
    ids, mask = ragged_batch(4, 60, min_len=40, seed=1)
    schedule = [1.0, 0.5, 0.25]  # truncation: the first ceil(r * n) tokens enter layer i
    enc = SkimEncoder(tiny_bert(attn="sdpa", layers=3, seed=0), build_strategy({"name": "truncate", "schedule": schedule}))
    with torch.no_grad(), enc.eval().recording_alive():
        out = enc(ids, mask, mode="prune")
    start, end = torch.tensor([5, 15, 0, 12]), torch.tensor([6, 22, 0, 12])  # feature 2 does not hold its answer
    counts = answer_survival(out, start, end).tolist()
    real = mask.sum(1).tolist()
    spans = [range(s, e + 1) for s, e in zip(start.tolist(), end.tolist()) if s > 0]
    with_answer = [n for n, s in zip(real, start.tolist()) if s > 0]
    entering = [sum(p < math.ceil(r * n) for span, n in zip(spans, with_answer) for p in span) for r in schedule]
    last = [math.ceil(schedule[-1] * n) for n in with_answer]
    reachable = sum(span[-1] < budget for span, budget in zip(spans, last))
    assert counts == [*entering, entering[-1], 2 + 8 + 1, 3, reachable]
    assert 0 < entering[-1] < entering[0] == 11 and 0 < reachable < 3  # the test sees both losses and survivals
    recall = answer_recall(torch.tensor(counts, dtype=torch.float64))
    assert recall == {"answer_kept_layer0": 1.0, "answer_kept_layer1": entering[1] / 11, "answer_kept_layer2": entering[2] / 11,
                      "answer_kept_output": entering[2] / 11, "answer_reachable": reachable / 3}
    assert answer_recall(torch.zeros(len(counts))) == {}  # no feature held its answer: nothing to report


def test_an_answer_is_reachable_by_its_first_and_last_tokens():
    """The span read off the kept first and last tokens covers the answer even if tokens between them were skimmed."""
    final = torch.zeros(3, 10, dtype=torch.bool)
    final[0, [2, 5]] = True  # first and last kept, the middle skimmed: reachable
    final[1, [2, 3, 4]] = True  # the last token skimmed: not reachable
    final[2, 2:6] = True  # every token kept
    alive = torch.ones(1, 3, 10, dtype=torch.bool)
    out = EncoderOutput(torch.zeros(3, 10, 4), final, *[torch.zeros(1, 3)] * 2, torch.zeros(3), torch.zeros(1, 3),
                        torch.zeros(3), {}, alive_per_layer=alive)  # fmt: skip
    counts = answer_survival(out, torch.tensor([2, 2, 2]), torch.tensor([5, 5, 5])).tolist()
    assert counts == [12, 2 + 3 + 4, 12, 3, 2]
