"""Budget baselines without a predictor: ``skim=truncate`` (the first tokens) and ``skim=random`` (protected tokens plus
a seeded random choice), to a schedule or to another run's measured per-layer kept ratios (``skim.match_run``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.errors import ConfigError
from skim.strategies import build_strategy
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
