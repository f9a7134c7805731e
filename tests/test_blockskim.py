"""Block-Skim and the skim encoder: mask/prune equivalence, dense equality, labels, loss and gradients."""

from __future__ import annotations

import re

import pytest
import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.errors import ConfigError
from skim.strategies import build_strategy
from skim.strategies.blockskim import block_labels, diagonal_blocks
from tests.conftest import ragged_batch, tiny_bert


def _blockskim_encoder(seed: int = 0, **kw) -> SkimEncoder:
    """Block-Skim with untrained predictors and a threshold at the median P(keep) of the first layer's blocks,
    so that about half of the blocks are dropped (a real decision, not a stub)."""
    enc = SkimEncoder(tiny_bert(seed=seed), build_strategy({"name": "blockskim", "threshold": 0.0, **kw})).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in enc.strategy.predictors.values():
            p.fc.weight.copy_(torch.randn(p.fc.weight.shape, generator=g) * 3.0)
        ids, mask = ragged_batch(8, 150, min_len=40, seed=seed + 2)
        out = enc(ids, mask, mode="mask")
        first = min(out.extras["block_logits"])
        logits, _, valid = out.extras["block_logits"][first]
        enc.strategy.cfg.threshold = float(logits.softmax(-1)[..., 1][valid].median())
    return enc


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("protect", [False, True])
def test_mask_and_prune_agree_on_kept_positions(batch_size, protect):
    enc = _blockskim_encoder(protect_special=protect, skim_layers=[0, 1])
    ids, mask = ragged_batch(9, 150, min_len=40)
    if batch_size == 1:  # an example on which the untrained predictors both keep and drop blocks
        with torch.no_grad():
            probe = enc(ids, mask, mode="mask")
        ratio = probe.final_keep.sum(1) / mask.sum(1)
        pick = int(torch.where((ratio > 0) & (ratio < 1), ratio, torch.full_like(ratio, 2.0)).argmin())
        ids, mask = ids[pick : pick + 1], mask[pick : pick + 1]
    else:
        ids, mask = ids[1:], mask[1:]
    protect_mask = torch.zeros_like(mask)
    protect_mask[:, :12] = 1
    with torch.no_grad():
        m = enc(ids, mask, mode="mask", protect_mask=protect_mask)
        p = enc(ids, mask, mode="prune", protect_mask=protect_mask)
    assert torch.equal(m.final_keep, p.final_keep)
    assert torch.equal(m.kept_per_layer, p.kept_per_layer)
    real = mask.sum(1)
    # the test is only meaningful if something was skimmed and something kept
    assert (m.kept_per_layer[1:] < real).any()
    assert m.final_keep.any()
    keep = m.final_keep
    torch.testing.assert_close(m.last_hidden_state[keep], p.last_hidden_state[keep], atol=1e-5, rtol=1e-5)
    # skimmed tokens carry the same forwarded state in both modes
    torch.testing.assert_close(m.last_hidden_state[mask.bool()], p.last_hidden_state[mask.bool()], atol=1e-5, rtol=1e-5)


def test_prune_really_shortens_sequences():
    enc = _blockskim_encoder()
    ids, mask = ragged_batch(9, 150, min_len=40)
    ids, mask = ids[1:], mask[1:]
    widths = []
    layer = enc.adapter.layers[2]
    hook = layer.register_forward_pre_hook(lambda mod, args: widths.append(args[0].shape[1]))
    with torch.no_grad():
        out = enc(ids, mask, mode="prune")
    hook.remove()
    assert widths[0] == int(out.kept_per_layer[2].max()) < 150


def test_keep_everything_equals_dense_exactly():
    backbone = tiny_bert()
    ids, mask = ragged_batch(8, 150, min_len=40)
    keep_all = SkimEncoder(backbone, build_strategy({"name": "blockskim", "threshold": 0.0})).eval()
    dense = SkimEncoder(backbone, build_strategy({"name": "none"})).eval()
    with torch.no_grad():
        a = keep_all(ids, mask, mode="prune")
        b = dense(ids, mask, mode="prune")
        hf = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.equal(a.last_hidden_state[real], b.last_hidden_state[real])
    assert torch.equal(a.final_keep, real)
    # and the dense path through our loop is the Hugging Face model
    torch.testing.assert_close(b.last_hidden_state[real], hf[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("protect", [True, False])
@pytest.mark.parametrize("attn", ["eager", "skim_blockskim"])
def test_skim_everything_keeps_only_protected_tokens(protect, attn):
    """Threshold 1 drops every block: later layers (and their predictors, on the fused path too) see no live token."""
    enc = SkimEncoder(tiny_bert(attn), build_strategy({"name": "blockskim", "threshold": 1.0, "protect_special": protect})).eval()
    ids, mask = ragged_batch(4, 100, min_len=60)
    protect_mask = torch.zeros_like(mask)
    protect_mask[:, :10] = 1  # [CLS] + question inside block 0
    with torch.no_grad():
        out = enc(ids, mask, mode="prune", protect_mask=protect_mask)
    expected = 32 if protect else 0  # the block holding the protected tokens survives, nothing else
    assert out.kept_per_layer[1:].eq(expected).all()
    assert out.final_keep.sum(1).eq(expected).all()
    assert torch.isfinite(out.last_hidden_state).all()


def test_batch_align_keeps_the_same_block_count_for_every_example():
    enc = _blockskim_encoder(batch_align=True)
    ids, mask = ragged_batch(8, 160, min_len=150)
    # decisions of the first skimming layer (recorded in extras): every example keeps exactly m blocks
    with torch.no_grad():
        out = enc(ids, mask, mode="mask")
    counts = out.extras["block_keep"][0].sum(1)
    assert counts.eq(counts[0]).all()


def test_block_labels_hand_checked():
    bs = 32

    def labels(start, end, rule):
        return block_labels(torch.tensor([start]), torch.tensor([end]), 96, bs, rule)[0].tolist()

    # answer crossing a block boundary with two tokens on each side: both blocks positive under both rules
    assert labels(30, 33, 2) == [1, 1, 0]
    assert labels(30, 33, 1) == [1, 1, 0]
    # one token on each side of the boundary: the faithful rule (sum > 1) labels neither block
    assert labels(31, 32, 2) == [0, 0, 0]
    assert labels(31, 32, 1) == [1, 1, 0]
    # single-token answer: never positive under the faithful rule, positive under the fixed one
    assert labels(40, 40, 2) == [0, 0, 0]
    assert labels(40, 40, 1) == [0, 1, 0]
    # "no answer in this window" is labelled at [CLS]
    assert labels(0, 0, 2) == [0, 0, 0]
    assert labels(0, 0, 1) == [1, 0, 0]
    # ragged last block (length 70 -> blocks of 32, 32, 6)
    assert block_labels(torch.tensor([66]), torch.tensor([69]), 70, bs, 2)[0].tolist() == [0, 0, 1]


def test_diagonal_blocks_zero_dead_rows_and_ragged_tail():
    probs = torch.rand(1, 2, 40, 40)
    alive = torch.ones(1, 40, dtype=torch.bool)
    alive[0, 35:] = False
    blocks = diagonal_blocks(probs, alive, 32)
    assert blocks.values.shape == (2, 2, 32, 32) and blocks.index is None and (blocks.batch, blocks.num_blocks) == (1, 2)
    torch.testing.assert_close(blocks.values[0], probs[0, :, :32, :32])
    assert blocks.values[1, :, 3:, :].abs().sum() == 0 and blocks.values[1, :, :, 3:].abs().sum() == 0


def _padded_full_blocks(probs, alive, bs=32):
    """Reference: the diagonal blocks of the zero-padded full matrix, dead rows and columns zeroed ([B, K, H, bs, bs])."""
    B, n = alive.shape
    K, pad = -(-n // bs), -(-n // bs) * bs - n
    full = torch.nn.functional.pad(probs, (0, pad, 0, pad))
    want = torch.stack([full[:, :, k * bs : (k + 1) * bs, k * bs : (k + 1) * bs] for k in range(K)], dim=1)
    live = torch.nn.functional.pad(alive, (0, pad)).view(B, K, 1, bs).to(probs.dtype)
    return want * live[..., :, None] * live[..., None, :]


@pytest.mark.parametrize("n", [31, 64, 70, 97])
def test_diagonal_blocks_are_the_blocks_of_the_full_matrix(n):
    """Blocks copied out of a strided view equal the blocks of the zero-padded full matrix, values and gradients,
    for contiguous and transposed (non-contiguous) inputs; ``live_only`` keeps exactly the blocks with a live token."""
    g = torch.Generator().manual_seed(n)
    base = torch.rand(2, 3, n, n, generator=g, dtype=torch.float64)
    alive = torch.rand(2, n, generator=g) > 0.2
    alive[1, 32:64] = False  # a whole dead block in the middle (skimmed)
    for probs in (base.clone().requires_grad_(), base.transpose(-1, -2).clone().transpose(-1, -2).requires_grad_()):
        got = diagonal_blocks(probs, alive, 32)
        want = _padded_full_blocks(probs, alive).flatten(0, 1)
        assert torch.equal(got.values, want)
        w = torch.rand(got.values.shape, generator=g, dtype=torch.float64)
        assert torch.equal(*(torch.autograd.grad((x * w).sum(), probs)[0] for x in (got.values, want)))
        live = diagonal_blocks(probs, alive, 32, live_only=True)
        has_live = torch.nn.functional.pad(alive, (0, -(-n // 32) * 32 - n)).view(-1, 32).any(-1)
        assert live.index.tolist() == has_live.nonzero().squeeze(1).tolist()
        assert torch.equal(live.values, want[has_live])


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("n", [64, 150])
def test_lse_blocks_equal_eager_blocks(batch_size, n):
    """The fused path's blocks (queries, keys and the kernel's log-sum-exp) equal the blocks of eager softmax
    probabilities within 1e-5 in fp32: mixed lengths, padding, skimmed tokens, a ragged last block (n = 150)."""
    from skim.strategies.blockskim import _fused_attention_with_lse, live_diagonal_blocks

    g = torch.Generator().manual_seed(batch_size * n)
    H, d, scale = 4, 16, 0.25
    q, k, v = (torch.randn(batch_size, H, n, d, generator=g) * 2 for _ in range(3))
    lengths = torch.randint(n // 3, n + 1, (batch_size,), generator=g)
    lengths[0] = n
    alive = torch.arange(n)[None] < lengths[:, None]
    alive &= torch.rand(batch_size, n, generator=g) > 0.25  # skimmed tokens
    alive[0, 40:64] = False  # and a block with none alive
    additive = torch.zeros(batch_size, 1, 1, n).masked_fill(~alive[:, None, None], torch.finfo(q.dtype).min)
    probs = (q @ k.transpose(-1, -2) * scale + additive).softmax(-1)
    out, lse = _fused_attention_with_lse(q, k, v, additive, scale)
    torch.testing.assert_close(out, probs @ v, atol=1e-5, rtol=1e-5)
    got = live_diagonal_blocks(q, k, lse, alive, scale, 32)
    want = diagonal_blocks(probs, alive, 32, live_only=True)
    assert torch.equal(got.index, want.index) and (got.batch, got.num_blocks) == (want.batch, want.num_blocks)
    assert got.values.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.values, want.values, atol=1e-5, rtol=0)


def test_dead_blocks_get_the_zero_block_logits():
    """At inference the CNN runs on live blocks only; a block without a live token gets the logits the CNN gives an
    all-zero block, exactly what it gets when every block runs (eval-mode batch norm is per block)."""
    enc = _blockskim_encoder()
    pred = enc.strategy.predictors["0"]
    with torch.no_grad():
        for bn in (pred.bn1, pred.bn2):  # non-trivial running statistics
            bn.running_mean.uniform_(-0.1, 0.1), bn.running_var.uniform_(0.5, 2.0)
    probs = torch.rand(3, 4, 100, 100).softmax(-1)
    alive = torch.ones(3, 100, dtype=torch.bool)
    alive[1, 50:] = False
    alive[2, :40] = False
    with torch.no_grad():
        every = pred.block_logits(diagonal_blocks(probs, alive, 32))
        live = pred.block_logits(diagonal_blocks(probs, alive, 32, live_only=True))
    assert live.shape == every.shape == (3, 4, 2)
    torch.testing.assert_close(live, every, atol=1e-6, rtol=1e-5)
    assert not torch.equal(every[1, 3], every[0, 0])  # dead and live blocks really differ


def test_blockskim_needs_eager_attention_and_answer_spans():
    from skim.strategies.blockskim import BlockSkim

    with pytest.raises(ConfigError, match="attn_implementation"):
        BlockSkim.check_compatible("qa", "sdpa")
    with pytest.raises(ConfigError, match="does not support 'cls'"):
        BlockSkim.check_compatible("cls", "auto")
    with pytest.raises(ConfigError, match="unknown option"):
        build_strategy({"name": "blockskim", "treshold": 0.1})
    with pytest.raises(ConfigError, match="skim_layers"):
        SkimEncoder(tiny_bert(layers=2), build_strategy({"name": "blockskim", "skim_layers": [5]}))


def test_combined_loss_decreases_and_reaches_predictors(minilm_path):
    from skim.tasks.qa_module import QAModule

    torch.manual_seed(0)
    module = QAModule(
        model={
            "pretrained_name_or_path": minilm_path,
            "random_init": True,
            "config_overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
        },
        skim={"name": "blockskim", "skim_factor": 1.0, "min_answer_tokens": 1},
    )
    module.train()
    ids, mask = ragged_batch(4, 96, vocab=1000, min_len=70)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "start_positions": torch.tensor([40, 5, 60, 33]),
        "end_positions": torch.tensor([42, 7, 62, 36]),
    }
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        start, end, out = module(batch)
        terms = module._losses(start, end, out, batch)
        opt.zero_grad()
        terms["loss"].backward()
        if step == 0:
            assert "skim_loss" in terms and terms["skim_loss"] > 0
            for name, p in module.strategy.predictors.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        opt.step()
        losses.append((terms["loss"].item(), terms["skim_loss"].item()))
    assert losses[-1][0] < 0.5 * losses[0][0]
    assert losses[-1][1] < losses[0][1]


def test_histogram_auc():
    from skim.strategies.blockskim import histogram_auc

    assert histogram_auc(torch.tensor([0.0, 0, 5]), torch.tensor([4.0, 0, 0])) == 1.0
    assert histogram_auc(torch.tensor([3.0, 0, 0]), torch.tensor([0.0, 0, 2])) == 0.0
    assert histogram_auc(torch.tensor([1.0, 2, 1]), torch.tensor([2.0, 4, 2])) == pytest.approx(0.5)
    # one answer block in the top bin, one tied with the single other block: (1 + 0.5) / 2
    assert histogram_auc(torch.tensor([0.0, 1, 1]), torch.tensor([0.0, 1, 0])) == pytest.approx(0.75)
    assert histogram_auc(torch.tensor([0.0, 0]), torch.tensor([1.0, 0])) is None


def test_block_statistics_count_every_real_block_once():
    enc = _blockskim_encoder()
    strat = enc.strategy
    ids, mask = ragged_batch(6, 150, min_len=40, seed=4)
    batch = {"start_positions": torch.tensor([3, 40, 70, 100, 0, 33]), "end_positions": torch.tensor([5, 41, 70, 104, 0, 64])}
    with torch.no_grad():
        out = enc(ids, mask, mode="mask")
    stats = strat.eval_stats(out, batch)
    nb, S = len(strat.P_EDGES), strat._STATS
    real_blocks = int(torch.nn.functional.pad(mask, (0, 10)).view(6, 5, 32).any(-1).sum())
    labels = block_labels(batch["start_positions"], batch["end_positions"], 150, 32, 2)
    valid = torch.nn.functional.pad(mask, (0, 10)).view(6, 5, 32).any(-1)
    positives = int((labels.bool() & valid).sum())
    # layer 0 reads every real block; later layers only the blocks still alive
    tp, fp, fn, tn = stats[:4].tolist()
    assert tp + fp + fn + tn == real_blocks and tp + fn == positives
    assert stats[4 : 4 + nb].sum() == positives and stats[4 + nb : S].sum() == real_blocks - positives
    for i in strat.skim_layers[1:]:
        tp, fp, fn, tn = stats[S * i : S * i + 4].tolist()
        assert 0 < tp + fp + fn + tn < real_blocks
        assert stats[S * i + 4 : S * i + S].sum() == tp + fp + fn + tn
    res = strat.format_eval_stats(stats)
    assert 0.0 <= res["block_auc_layer0"] <= 1.0
    assert res["block_answer_share_layer0"] == pytest.approx(positives / real_blocks)
    report = strat.eval_report(stats)
    assert report["p_edges"] == list(strat.P_EDGES) and sum(report["layer0"]["answer"]) == positives
    strat.train()
    diag = strat.train_diagnostics(out, batch)
    assert set(diag) >= {"block_ce_layer0", "block_p_answer_layer0", "block_p_other_layer0", "block_recall_layer2"}
    assert all(torch.isfinite(v) for v in diag.values())


def _fused_and_eager(seed: int = 0):
    """The same Block-Skim encoder with HF eager attention (reference) and with the strategy's fused attention."""
    from skim.strategies.blockskim import ATTN_NAME

    ref = _blockskim_encoder(seed)
    fused = SkimEncoder(tiny_bert(ATTN_NAME, seed=seed), build_strategy({"name": "blockskim", "threshold": 0.0})).eval()
    fused.load_state_dict(ref.state_dict())
    fused.strategy.cfg.threshold = ref.strategy.cfg.threshold
    assert fused.attn_implementation == ATTN_NAME and ref.attn_implementation == "eager"
    return ref, fused


@pytest.mark.parametrize("mode", ["mask", "prune"])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_fused_diagonal_blocks_equal_eager_ones(mode, batch_size):
    ref, fused = _fused_and_eager()
    ids, mask = ragged_batch(batch_size, 150, min_len=40, seed=7)
    with torch.no_grad():
        a, b = ref(ids, mask, mode=mode), fused(ids, mask, mode=mode)
    assert a.kept_per_layer.tolist() == b.kept_per_layer.tolist()
    if batch_size > 1:  # a real decision: some blocks go after layer 0, not all
        assert 0 < int(b.kept_per_layer[1].sum()) < int(b.kept_per_layer[0].sum())
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=2e-5, rtol=1e-4)
    for i, (logits, _, valid) in a.extras["block_logits"].items():
        torch.testing.assert_close(b.extras["block_logits"][i][0][valid], logits[valid], atol=2e-5, rtol=1e-4)


def test_fused_path_returns_the_attention_output_and_only_live_blocks():
    from skim.strategies.blockskim import blockskim_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 70, 8) for _ in range(3))
    alive = torch.ones(2, 1, 1, 70, dtype=torch.bool)
    alive[1, ..., 50:] = False
    module = torch.nn.Module().eval()
    with torch.no_grad():
        out, blocks = blockskim_attention(module, q, k, v, alive, scaling=0.35, skim_block_size=32)
    probs = ((q @ k.transpose(-1, -2)) * 0.35).masked_fill(~alive, torch.finfo(q.dtype).min).softmax(-1)
    torch.testing.assert_close(out, (probs @ v).transpose(1, 2), atol=1e-6, rtol=1e-5)
    # 5 blocks hold a live token (3 + 2): only they are computed, [N, H, bs, bs]
    assert blocks.values.shape == (5, 4, 32, 32) and blocks.index.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(blocks.values, diagonal_blocks(probs, alive[:, 0, 0], 32, live_only=True).values, atol=1e-6, rtol=1e-5)


def test_fused_training_path_is_eager_with_gradients():
    ref, fused = _fused_and_eager()
    ref.train(), fused.train()
    ids, mask = ragged_batch(4, 100, min_len=40, seed=3)
    torch.manual_seed(5)
    a = ref(ids, mask, mode="mask")
    torch.manual_seed(5)
    b = fused(ids, mask, mode="mask")
    for i, (logits, _, _) in a.extras["block_logits"].items():
        torch.testing.assert_close(b.extras["block_logits"][i][0], logits, atol=1e-5, rtol=1e-4)
    a.extras["block_logits"][1][0].sum().backward()
    b.extras["block_logits"][1][0].sum().backward()
    # the block loss reaches the backbone through the attention probabilities, exactly as through HF's eager ones
    grad = fused.backbone.encoder.layer[1].attention.self.query.weight.grad
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, ref.backbone.encoder.layer[1].attention.self.query.weight.grad, atol=1e-5, rtol=1e-4)


def test_folded_batch_norm_equals_batch_norm_and_follows_weight_changes():
    """Inference folds the batch norms into the convolutions (cached); the result equals the module's batch-norm path
    after every way the weights change while the cache is warm: an in-place update, load_state_dict, a write through
    ``.data`` followed by a train/eval round trip, ``.to()``, and parameters made under inference_mode."""

    from skim.strategies.blockskim import BlockPredictor

    torch.manual_seed(0)
    pred = BlockPredictor(4, 32).eval()
    x = torch.rand(5, 4, 32, 32)

    def check(model, inp):
        with torch.no_grad():
            folded = model(inp)
        with torch.enable_grad():
            reference = model(inp)  # grad mode runs the batch-norm modules
        torch.testing.assert_close(folded, reference, atol=1e-5, rtol=1e-5)
        return folded

    with torch.no_grad():
        for bn in (pred.bn1, pred.bn2):  # non-trivial running statistics
            bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2.0), bn.weight.uniform_(0.5, 1.5)
    before = check(pred, x)
    with torch.no_grad():
        pred.bn1.running_mean.add_(0.3)  # in place: bumps the version
    assert not torch.allclose(check(pred, x), before)
    state = {k: v + 0.05 if v.is_floating_point() else v for k, v in pred.state_dict().items()}
    before = check(pred, x)
    pred.load_state_dict(state)
    assert not torch.allclose(check(pred, x), before)
    before = check(pred, x)
    pred.conv1.weight.data.mul_(2.0)  # no version bump: the train/eval round trip drops the cache
    pred.train().eval()
    assert not torch.allclose(check(pred, x), before)
    check(pred.double(), x.double())
    pred.float()
    with torch.inference_mode():  # parameters made here are inference tensors: folded every call, never cached
        made_there = BlockPredictor(4, 32).eval()
        made_there.load_state_dict(pred.state_dict())
        torch.testing.assert_close(made_there(x), check(pred, x))
        made_there.bn2.running_var.mul_(3.0)
        got = made_there(x)
    with torch.no_grad():
        pred.bn2.running_var.mul_(3.0)
    torch.testing.assert_close(got, check(pred, x))


def test_fused_path_in_bf16_matches_eager():
    """A bf16 model (no autocast) runs the fused path; the blocks are computed in float32 whatever the dtype, so the
    keep decisions and hidden states follow the eager bf16 reference."""
    ref, fused = _fused_and_eager()
    ref, fused = ref.to(torch.bfloat16), fused.to(torch.bfloat16)
    ids, mask = ragged_batch(8, 150, min_len=40, seed=7)
    with torch.no_grad():
        a, b = ref(ids, mask, mode="prune"), fused(ids, mask, mode="prune")
    assert b.last_hidden_state.dtype == torch.bfloat16
    agree = (a.final_keep == b.final_keep).float().mean()
    assert agree > 0.95  # bf16 eager probabilities are themselves rounded; decisions at the threshold may differ
    keep = a.final_keep & b.final_keep
    torch.testing.assert_close(b.last_hidden_state[keep].float(), a.last_hidden_state[keep].float(), atol=0.1, rtol=0.05)


def test_lse_blocks_under_bf16_autocast_stay_float32():
    from skim.strategies.blockskim import _fused_attention_with_lse, live_diagonal_blocks

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 100, 16, generator=g) * 2 for _ in range(3))
    alive = torch.ones(2, 100, dtype=torch.bool)
    alive[1, 70:] = False
    additive = torch.zeros(2, 1, 1, 100).masked_fill(~alive[:, None, None], torch.finfo(torch.float32).min)
    probs = (q @ k.transpose(-1, -2) * 0.25 + additive).softmax(-1)
    want = diagonal_blocks(probs, alive, 32, live_only=True).values
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, lse = _fused_attention_with_lse(q, k, v, additive, 0.25)
        got = live_diagonal_blocks(q, k, lse, alive, 0.25, 32).values
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [8, 10])
def test_attend_with_diagonal_blocks_gradients(n):
    """The training node (probs @ value and the diagonal blocks, the blocks' gradient added into the diagonal in
    place) passes torch.autograd.gradcheck in float64 and equals autograd through the strided view (blocks of 4:
    n = 8 two full blocks, n = 10 a ragged last one)."""
    from skim.strategies.blockskim import AttendWithDiagonalBlocks, _diagonal_of

    bs = 4
    g = torch.Generator().manual_seed(n)
    probs = torch.rand(2, 2, n, n, generator=g, dtype=torch.float64, requires_grad=True)
    value = torch.rand(2, 2, n, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, v: AttendWithDiagonalBlocks.apply(p, v, bs), (probs, value))
    w_out = torch.rand(2, 2, n, 3, generator=g, dtype=torch.float64)
    w_blocks = torch.rand(2, -(-n // bs), 2, bs, bs, generator=g, dtype=torch.float64)
    out, blocks = AttendWithDiagonalBlocks.apply(probs, value, bs)
    got = torch.autograd.grad((out * w_out).sum() + (blocks * w_blocks).sum(), (probs, value))
    want = torch.autograd.grad((probs @ value * w_out).sum() + (_diagonal_of(probs, bs) * w_blocks).sum(), (probs, value))
    torch.testing.assert_close(got, want)
    # only the blocks used (the attention output unused), and only the output used
    _, blocks = AttendWithDiagonalBlocks.apply(probs, value, bs)
    torch.testing.assert_close(torch.autograd.grad((blocks * w_blocks).sum(), probs)[0],
                               torch.autograd.grad((_diagonal_of(probs, bs) * w_blocks).sum(), probs)[0])
    out, _ = AttendWithDiagonalBlocks.apply(probs, value, bs)
    torch.testing.assert_close(torch.autograd.grad((out * w_out).sum(), probs)[0], torch.autograd.grad((probs @ value * w_out).sum(), probs)[0])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_attend_with_diagonal_blocks_under_bf16_autocast(device):
    """In bf16-mixed training the probabilities are float32 (autocast's softmax) and the values bf16: the node's
    gradients are those of autograd through the same autocast ops, each in its input's dtype (the first GPU run
    failed here: the backward multiplied float32 probabilities by a bf16 gradient). `make test-gpu` runs it on CUDA."""
    from skim.strategies.blockskim import AttendWithDiagonalBlocks, _diagonal_of

    bs, n = 4, 10
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 2, n, n, generator=g).softmax(-1).to(device).requires_grad_()
    value = torch.rand(2, 2, n, 3, generator=g).bfloat16().to(device).requires_grad_()
    w_out = torch.rand(2, 2, n, 3, generator=g).to(device)
    w_blocks = torch.rand(2, -(-n // bs), 2, bs, bs, generator=g).to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out, blocks = AttendWithDiagonalBlocks.apply(probs, value, bs)
        ref_out, ref_blocks = probs @ value, _diagonal_of(probs, bs).clone()
    assert out.dtype == ref_out.dtype == torch.bfloat16 and blocks.dtype == torch.float32
    got = torch.autograd.grad((out.float() * w_out).sum() + (blocks * w_blocks).sum(), (probs, value))
    want = torch.autograd.grad((ref_out.float() * w_out).sum() + (ref_blocks * w_blocks).sum(), (probs, value))
    assert [t.dtype for t in got] == [torch.float32, torch.bfloat16]
    torch.testing.assert_close(got, want)


def test_layer_thresholds_decide_per_layer_and_replace_the_threshold():
    """One threshold per skim layer: a layer at 0 keeps every block, a layer at 1 drops every unprotected one, and
    the list equal to the single threshold everywhere decides exactly as that threshold."""
    enc = _blockskim_encoder(skim_layers=[0, 1])
    ids, mask = ragged_batch(8, 150, min_len=40)
    with torch.no_grad():
        single = enc(ids, mask, mode="prune")
        enc.strategy.cfg.layer_thresholds = [enc.strategy.cfg.threshold] * 2
        same = enc(ids, mask, mode="prune")
        enc.strategy.cfg.layer_thresholds = [0.0, 1.0]
        split = enc(ids, mask, mode="prune")
    assert torch.equal(single.kept_per_layer, same.kept_per_layer)
    assert (single.kept_per_layer[1] < mask.sum(1)).any()  # the single threshold does drop blocks after layer 0
    assert torch.equal(split.kept_per_layer[1], mask.sum(1))  # threshold 0 after layer 0: every token kept
    assert split.kept_per_layer[2].eq(0).all()  # threshold 1 after layer 1: nothing unprotected left


@pytest.mark.parametrize("cfg, message", [
    ({"layer_thresholds": [0.5]}, "one threshold per skim layer (2: [0, 1]), got 1"),
    ({"layer_thresholds": [0.5, 1.5]}, "skim.layer_thresholds holds probabilities in [0, 1]"),
    ({"layer_thresholds": [0.9, 0.1], "skim_layers": [1, 0]}, "in ascending order without repeats, got skim_layers=[1, 0]"),
])  # fmt: skip
def test_layer_thresholds_are_checked(cfg, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SkimEncoder(tiny_bert(), build_strategy({"name": "blockskim", "skim_layers": [0, 1], **cfg}))


def test_block_statistics_count_at_each_layers_own_threshold():
    """Evaluation's per-layer precision/recall counts (and training's diagnostics) use the layer's own threshold:
    with layer 0 at 0 every block of layer 0 is predicted kept, with layer 1 at 1 none of layer 1."""
    enc = _blockskim_encoder(skim_layers=[0, 1], layer_thresholds=[0.0, 1.0])
    ids, mask = ragged_batch(4, 150, min_len=100)
    batch = {"start_positions": torch.tensor([40, 70, 5, 90]), "end_positions": torch.tensor([45, 72, 9, 95])}
    with torch.no_grad():
        out = enc(ids, mask, mode="mask")
    stats = enc.strategy.eval_stats(out, batch)
    s = enc.strategy._STATS
    tp0, fp0, fn0, tn0 = stats[0:4].tolist()
    tp1, fp1, fn1, tn1 = stats[s : s + 4].tolist()
    assert fn0 == tn0 == 0 and tp0 + fp0 > 0  # layer 0: everything kept
    assert tp1 == fp1 == 0 and fn1 + tn1 > 0  # layer 1: nothing kept
    enc.strategy.train()
    diag = enc.strategy.train_diagnostics(out, batch)
    assert diag["block_recall_layer0"] == 1.0 and diag["block_recall_layer1"] == 0.0
