"""Budget baselines without a predictor: ``skim=truncate`` (the first tokens) and ``skim=random`` (protected tokens plus
a seeded random choice), to a schedule or to another run's measured per-layer kept ratios (``skim.match_run``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.errors import ConfigError
from skim.state import EncoderOutput
from skim.strategies import build_strategy
from skim.tasks.qa_module import answer_recall, answer_survival
from tests.conftest import ragged_batch, tiny_bert


def _encoder(name: str, **kw) -> SkimEncoder:
    return SkimEncoder(tiny_bert(attn="sdpa", layers=4, seed=0), build_strategy({"name": name, **kw})).eval()


def _protect(mask: torch.Tensor, first: int) -> torch.Tensor:
    protect = torch.zeros_like(mask)
    protect[:, :first] = 1
    return protect * mask


@pytest.mark.parametrize("name", ["truncate", "random"])
def test_budget_per_layer_protected_tokens_and_mask_equals_prune(name):
    ids, mask = ragged_batch(8, 70, min_len=20)
    protect = _protect(mask, 3)
    schedule = [1.0, 0.6, 0.3, 0.3]
    with torch.no_grad():
        p = _encoder(name, schedule=schedule)(ids, mask, mode="prune", protect_mask=protect)
        m = _encoder(name, schedule=schedule)(ids, mask, mode="mask", protect_mask=protect)
    real = mask.sum(1)
    for i, r in enumerate(schedule):
        want = torch.tensor([max(3, math.ceil(r * int(n))) for n in real])
        assert torch.equal(p.kept_per_layer[i], want), i
    assert (p.final_keep[protect.bool()]).all()
    assert torch.equal(p.final_keep, m.final_keep)
    kept = p.final_keep
    torch.testing.assert_close(p.last_hidden_state[kept], m.last_hidden_state[kept], atol=1e-5, rtol=1e-4)


def test_random_is_seeded_and_differs_from_truncation():
    ids, mask = ragged_batch(8, 70, min_len=40)
    protect = _protect(mask, 1)
    run = lambda name, seed=0: _encoder(name, schedule=[1.0, 0.5], seed=seed).forward(ids, mask, mode="prune", protect_mask=protect).final_keep
    with torch.no_grad():
        a, b, c = run("random"), run("random"), run("random", seed=1)
        first = SkimEncoder(tiny_bert(attn="sdpa", layers=4, seed=0), build_strategy({"name": "truncate", "schedule": [1.0, 0.5]})).eval()(
            ids, mask, mode="prune", protect_mask=protect).final_keep
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a.sum(1), first.sum(1)) and not torch.equal(a, first)
    # truncation keeps a prefix; the random choice reaches the end of the sequences
    last = mask.sum(1) - 1
    assert first[torch.arange(8), last].sum() == 0 and a[torch.arange(8), last].sum() > 0


def test_match_run_reads_the_measured_kept_ratios(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    metrics = {f"val/skim/kept_layer{i}": r for i, r in enumerate([1.0, 0.62, 0.28, 0.11])}
    (run / "metrics.json").write_text(json.dumps({"metrics": {**metrics, "val/acc": 87.0}}))
    strategy = build_strategy({"name": "random", "match_run": str(run)})
    assert [strategy.ratio(i) for i in range(5)] == [1.0, 0.62, 0.28, 0.11, 0.11]
    with pytest.raises(ConfigError, match="no metrics.json"):
        build_strategy({"name": "truncate", "match_run": str(tmp_path)})
    (run / "metrics.json").write_text(json.dumps({"metrics": {"val/acc": 87.0}}))
    with pytest.raises(ConfigError, match="no per-layer kept ratios"):
        build_strategy({"name": "random", "match_run": str(run)})


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
