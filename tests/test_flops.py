"""Analytic FLOPs (skim.metrics.flops) against torch.utils.flop_counter.FlopCounterMode, dense/mask/prune."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from skim.encoders.skim_encoder import SkimEncoder
from skim.metrics.flops import EncoderShape, encoder_macs
from skim.strategies import build_strategy
from skim.strategies.transkimmer import ATTN_NAME
from tests.conftest import calibrate_blockskim_threshold

SHAPES = {
    "tiny": {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128},
    "minilm": {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536},
}


def _encoder(shape: str, skim: str) -> SkimEncoder:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=200, num_hidden_layers=3, max_position_embeddings=512, **SHAPES[shape])
    strategy = build_strategy({"name": skim, **({"threshold": 0.5} if skim == "blockskim" else {})})
    cfg._attn_implementation = {"none": "sdpa", "blockskim": "eager", "transkimmer": ATTN_NAME}[skim]
    enc = SkimEncoder(BertModel(cfg, add_pooling_layer=False), strategy).eval()
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


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("skim,mode", [("none", "prune"), ("blockskim", "mask"), ("blockskim", "prune"), ("transkimmer", "mask"), ("transkimmer", "prune")])
def test_analytic_flops_match_the_flop_counter(shape, skim, mode):
    enc = _encoder(shape, skim)
    L = 150
    ids = torch.randint(1, 200, (1, L))
    mask = torch.ones_like(ids)
    if skim == "blockskim":
        calibrate_blockskim_threshold(enc, torch.randint(1, 200, (4, L)), torch.ones(4, L, dtype=torch.long))
    # FlopCounterMode has no formula for the CPU flash-attention kernel of SDPA (it would count 0 for QK^T and AV):
    # run SDPA's math backend, which decomposes into matmuls that it counts
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = enc(ids, mask, mode=mode)
    counted = counter.get_total_flops()
    strategy = enc.strategy
    if mode == "mask":
        # masking computes every layer at full length; the predictors read every token
        executed = torch.full_like(out.kept_per_layer, L)
        pred_tokens = executed
    else:
        executed = out.kept_per_layer
        pred_tokens = strategy.predictor_tokens(out)
    hidden = enc.hidden_size
    macs = encoder_macs(executed, EncoderShape.of(enc.backbone.config), lambda i, t: strategy.predictor_macs(i, t, hidden), pred_tokens)
    analytic = 2 * float(macs.sum())
    assert analytic == pytest.approx(counted, rel=0.02), (analytic, counted)
    if mode == "prune" and skim != "none":
        assert out.kept_per_layer[-1, 0] < L  # the check covered a model that really skimmed
