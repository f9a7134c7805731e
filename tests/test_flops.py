"""Analytic FLOPs (skim.metrics.flops) against torch.utils.flop_counter.FlopCounterMode, dense/mask/prune."""

from __future__ import annotations

import pytest
import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.strategies import build_strategy
from skim.strategies.transkimmer import ATTN_NAME
from tests.conftest import FLOPS_SHAPES, assert_flops_match, calibrate_blockskim_threshold, flops_encoder


def _encoder(shape: str, skim: str) -> SkimEncoder:
    strategy = build_strategy({"name": skim, **({"threshold": 0.5} if skim == "blockskim" else {})})
    enc = flops_encoder(shape, strategy, {"none": "sdpa", "blockskim": "eager", "transkimmer": ATTN_NAME}[skim])
    if skim == "transkimmer":
        with torch.no_grad():
            for p in strategy.predictors.values():
                p.net[-1].weight.normal_(0, 1.0)
                p.net[-1].bias.copy_(torch.tensor([0.0, 0.5]))
    if skim == "blockskim":
        with torch.no_grad():
            for p in strategy.predictors.values():
                p.fc.weight.normal_(0, 3.0)
    return enc


@pytest.mark.parametrize("shape", list(FLOPS_SHAPES))
@pytest.mark.parametrize("skim,mode", [("none", "prune"), ("blockskim", "mask"), ("blockskim", "prune"), ("transkimmer", "mask"), ("transkimmer", "prune")])
def test_analytic_flops_match_the_flop_counter(shape, skim, mode):
    enc = _encoder(shape, skim)
    L = 150
    ids = torch.randint(1, 200, (1, L))
    mask = torch.ones_like(ids)
    if skim == "blockskim":
        calibrate_blockskim_threshold(enc, torch.randint(1, 200, (4, L)), torch.ones(4, L, dtype=torch.long))
    out = assert_flops_match(enc, ids, mask, mode)
    if mode == "prune" and skim != "none":
        assert out.kept_per_layer[-1, 0] < L  # the check covered a model that really skimmed
