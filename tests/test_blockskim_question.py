"""Block-Skim with ``question_attention``: the predictor also reads each block's question-context attention."""

from __future__ import annotations

import pytest
import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.strategies import build_strategy
from skim.strategies.blockskim import (
    ATTN_NAME,
    _fused_attention_with_lse,
    question_attention_from_lse,
    question_attention_from_probs,
    question_block_features,
)
from tests.conftest import ragged_batch, tiny_bert


def _question(batch: int, n: int, g: torch.Generator) -> torch.Tensor:
    """[CLS] + a question of 3-12 tokens + [SEP] at the front; the last example has none (all context, skimmed)."""
    lengths = torch.randint(5, 15, (batch,), generator=g)
    q = torch.arange(n)[None] < lengths[:, None]
    q[-1] = False
    return q


@pytest.mark.parametrize("batch_size", [1, 6])
def test_fused_question_attention_equals_the_probabilities(batch_size):
    """From queries, keys and the kernel's log-sum-exp, the question's rows and columns give what the full softmax
    probabilities give: padding, skimmed tokens, examples with different question lengths (or none)."""
    g = torch.Generator().manual_seed(batch_size)
    B, H, n, d, scale = batch_size, 4, 90, 16, 0.25
    q, k, v = (torch.randn(B, H, n, d, generator=g) * 2 for _ in range(3))
    alive = torch.arange(n)[None] < torch.randint(40, n + 1, (B,), generator=g)[:, None]
    alive[:, 20:] &= torch.rand(B, n - 20, generator=g) > 0.3
    question = _question(B, n, g) & alive if B > 1 else _question(2, n, g)[:1] & alive
    additive = torch.zeros(B, 1, 1, n).masked_fill(~alive[:, None, None], torch.finfo(q.dtype).min)
    probs = (q @ k.transpose(-1, -2) * scale + additive).softmax(-1)
    _, lse = _fused_attention_with_lse(q, k, v, additive, scale)
    want = question_attention_from_probs(probs, question)
    got = question_attention_from_lse(q, k, lse, question, alive, scale)
    for a, b in zip(got, want):
        torch.testing.assert_close(a[alive[:, None].expand_as(a)], b[alive[:, None].expand_as(b)], atol=1e-5, rtol=1e-4)
    # by hand, head 0 of example 0: question token j's probability on key t, averaged over the question
    nq = int(question[0].sum())
    torch.testing.assert_close(want[0][0, 0], probs[0, 0][question[0]].sum(0) / nq)
    torch.testing.assert_close(want[1][0, 0], probs[0, 0][:, question[0]].sum(1))


def test_question_block_features_hand_computed():
    received = torch.arange(10.0).view(1, 1, 10)  # one head, 10 tokens, blocks of 4 (the last ragged)
    given = torch.arange(10.0).view(1, 1, 10) / 10
    alive = torch.ones(1, 10, dtype=torch.bool)
    alive[0, 1] = False  # a skimmed token counts in neither
    alive[0, 4:8] = False  # a block without a live token: zeros
    feats = question_block_features(received, given, alive, bs=4)
    assert feats.shape == (3, 2)
    assert feats[:, 0].tolist() == pytest.approx([0 + 2 + 3, 0, 8 + 9])
    assert feats[:, 1].tolist() == pytest.approx([(0.0 + 0.2 + 0.3) / 3, 0, (0.8 + 0.9) / 2])
    live = question_block_features(received, given, alive, bs=4, index=torch.tensor([0, 2]))
    torch.testing.assert_close(live, feats[[0, 2]])


def _encoders(seed: int = 0):
    """The same question-attention Block-Skim encoder with HF eager attention and with the fused path, a threshold
    at the median P(keep) of the first layer's blocks (real decisions)."""
    cfg = {"name": "blockskim", "threshold": 0.0, "question_attention": True}
    ref = SkimEncoder(tiny_bert(seed=seed), build_strategy(cfg)).eval()
    fused = SkimEncoder(tiny_bert(ATTN_NAME, seed=seed), build_strategy(cfg)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in ref.strategy.predictors.values():
            p.fc.weight.copy_(torch.randn(p.fc.weight.shape, generator=g) * 3.0)
            p.question_norm.running_mean.uniform_(0.0, 0.2, generator=g)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


@pytest.mark.parametrize("mode", ["mask", "prune"])
def test_fused_and_eager_paths_give_the_same_decisions(mode):
    ref, fused = _encoders()
    ids, mask = ragged_batch(8, 150, min_len=40, seed=7)
    protect = _question(8, 150, torch.Generator().manual_seed(3)).long() & mask
    with torch.no_grad():
        logits, _, valid = ref(ids, mask, mode="mask", protect_mask=protect).extras["block_logits"][0]
        threshold = float(logits.softmax(-1)[..., 1][valid].median())
        ref.strategy.cfg.threshold = fused.strategy.cfg.threshold = threshold
        a = ref(ids, mask, mode=mode, protect_mask=protect)
        b = fused(ids, mask, mode=mode, protect_mask=protect)
    assert a.kept_per_layer.tolist() == b.kept_per_layer.tolist()
    assert 0 < int(b.kept_per_layer[1].sum()) < int(b.kept_per_layer[0].sum())  # some blocks go, not all
    for i, (logits, _, valid) in a.extras["block_logits"].items():
        torch.testing.assert_close(b.extras["block_logits"][i][0][valid], logits[valid], atol=2e-5, rtol=1e-4)


def test_question_features_change_the_logits_and_train():
    """The features reach the logits (another question, other logits) and the block loss trains their weights."""
    ref, _ = _encoders()
    ids, mask = ragged_batch(4, 100, min_len=60, seed=2)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        short = ref(ids, mask, mode="mask", protect_mask=_question(4, 100, g).long() & mask).extras["block_logits"][0][0]
        longer = torch.zeros_like(mask)
        longer[:, :30] = 1
        long = ref(ids, mask, mode="mask", protect_mask=longer & mask).extras["block_logits"][0][0]
    assert not torch.allclose(short, long)
    ref.train()
    out = ref(ids, mask, mode="mask", protect_mask=longer & mask)
    loss = ref.strategy.aux_losses(out, {"start_positions": torch.tensor([40, 41, 70, 5]), "end_positions": torch.tensor([42, 41, 75, 6])})
    loss["skim_loss"].backward()
    pred = ref.strategy.predictors["0"]
    assert pred.question_norm.weight.grad.abs().sum() > 0 and pred.fc.weight.grad[:, -8:].abs().sum() > 0


def test_question_attention_costs_its_rows_and_columns():
    plain = SkimEncoder(tiny_bert(), build_strategy({"name": "blockskim"})).strategy
    question = SkimEncoder(tiny_bert(), build_strategy({"name": "blockskim", "question_attention": True})).strategy
    tokens = torch.tensor([100, 64])
    with_q = question.predictor_macs(0, torch.stack([tokens, torch.tensor([12, 0])], -1), hidden=32)
    base = plain.predictor_macs(0, tokens, hidden=32)
    # 2 * q * n * hidden for the scores, plus the Linear's 2H inputs on each block (4 blocks, 2 blocks)
    assert (with_q - base).tolist() == [2 * 12 * 100 * 32 + 4 * 2 * 8, 0 + 2 * 2 * 8]


def test_dead_blocks_get_the_zero_block_logits_with_question_features():
    """Live-only blocks (inference) give every block the logits that running all blocks gives, question features
    and their batch norm's running statistics included; the cached zero-block logits follow a change of those."""
    from skim.strategies.blockskim import BlockPredictor, diagonal_blocks

    torch.manual_seed(0)
    pred = BlockPredictor(4, 32, question_features=8).eval()
    with torch.no_grad():
        pred.question_norm.running_mean.uniform_(-0.5, 0.5), pred.question_norm.running_var.uniform_(0.5, 2.0)
        pred.fc.weight.normal_(0, 1.0)
    probs = torch.rand(3, 4, 100, 100).softmax(-1)
    alive = torch.ones(3, 100, dtype=torch.bool)
    alive[1, 50:] = False
    question = torch.zeros(3, 100, dtype=torch.bool)
    question[:, :10] = True
    feats = question_attention_from_probs(probs, question)
    every = diagonal_blocks(probs, alive, 32)
    every.question = question_block_features(*feats, alive, 32)
    live = diagonal_blocks(probs, alive, 32, live_only=True)
    live.question = question_block_features(*feats, alive, 32, live.index)
    with torch.no_grad():
        a, b = pred.block_logits(every), pred.block_logits(live)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        pred.question_norm.running_mean.add_(1.0)  # the cache must notice
        torch.testing.assert_close(pred.block_logits(live), pred.block_logits(every), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(pred.block_logits(live)[1, 3], b[1, 3])
