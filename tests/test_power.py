"""PoWER-BERT: significance = attention received, top-k extract with protected tokens, mask == prune, the soft-extract
stage (multipliers, mass regulariser, clipping, learned l_j), FLOPs against the counter, QA and cls, bad configs."""

from __future__ import annotations

import pytest
import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.errors import ConfigError
from skim.strategies import build_strategy
from skim.strategies.power import PowerBert, learned_counts, significance, significance_rank
from tests.conftest import FLOPS_SHAPES, assert_flops_match, flops_encoder, ragged_batch, tiny_bert


def _encoder(layers: int = 3, seed: int = 0, **kw) -> SkimEncoder:
    return SkimEncoder(
        tiny_bert(attn="eager", layers=layers, seed=seed), build_strategy({"name": "power", **kw})
    ).eval()


def _protect(mask: torch.Tensor, first: int) -> torch.Tensor:
    protect = torch.zeros_like(mask)
    protect[:, :first] = 1
    return protect * mask


def _set_retention(enc: SkimEncoder, values: list[torch.Tensor]) -> None:
    """Write r_j (the strategy stores p = r / retention_lr_scale)."""
    strategy = enc.strategy
    with torch.no_grad():
        for p, r in zip(strategy.retention, values):
            p.copy_(r / strategy.retention_scale)


def _hf_attentions(enc: SkimEncoder, ids, mask):
    """The backbone's own dense forward: per-layer attention probabilities and the last hidden state."""
    with torch.no_grad():
        out = enc.backbone(input_ids=ids, attention_mask=mask, output_attentions=True)
    return out.attentions, out.last_hidden_state


# ---- significance and ranking ------------------------------------------------------------------------------------
def test_significance_is_the_attention_received_hand_checked():
    probs = torch.tensor(
        [
            [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]],
            [[0.2, 0.2, 0.6], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]],
        ]
    )[None]  # [B=1, H=2, n=3, n=3]
    alive = torch.tensor([[True, True, False]])  # query 2 is padding: its row is not counted
    # heads summed: query 0 gives [0.7, 0.5, 0.8], query 1 gives [0.4, 0.9, 0.7]
    torch.testing.assert_close(significance(probs, alive), torch.tensor([[1.1, 1.4, 1.5]]))
    # the code's variant leaves out a token's attention to itself (diagonal 0.7 and 0.9 of the live queries)
    torch.testing.assert_close(significance(probs, alive, exclude_self=True), torch.tensor([[0.4, 0.5, 1.5]]))
    # ranks: protected first, then by significance, dead last; ties keep sequence order
    score = torch.tensor([[1.1, 1.4, 1.5, 0.2, 1.4, 9.0]])
    alive = torch.tensor([[True, True, True, True, True, False]])
    protected = torch.tensor([[True, False, False, False, False, False]])
    assert significance_rank(score, alive, protected).tolist() == [[0, 2, 1, 4, 3, 5]]


def test_significance_matches_the_backbones_attention_column_sums():
    ids, mask = ragged_batch(4, 40, min_len=15)
    enc = _encoder(stage="hard", retention=[0.5])
    with torch.no_grad():
        out = enc(ids, mask, mode="mask")
    attentions, _ = _hf_attentions(enc, ids, mask)
    real = mask.bool()
    # layer 0 sees the full sequences in both models: heads and real queries summed, per key
    expected = (attentions[0] * real[:, None, :, None]).sum((1, 2))
    score, _ = out.extras["power_significance"][0]
    torch.testing.assert_close(score[real], expected[real], atol=1e-5, rtol=1e-5)


# ---- hard extract ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protect_special", [True, False])
def test_hard_extract_keeps_the_top_tokens_and_the_protected_ones(protect_special):
    ids, mask = ragged_batch(6, 40, min_len=10, seed=3)
    protect = _protect(mask, 4)
    counts = [12, 8, 5]
    enc = _encoder(stage="hard", retention=counts, retention_unit="tokens", protect_special=protect_special)
    with torch.no_grad():
        out = enc(ids, mask, mode="mask", protect_mask=protect)
    real = mask.bool()
    n = mask.sum(1)
    prot = protect.bool() if protect_special else torch.zeros_like(real)
    prot[:, 0] = True  # [CLS] always
    alive = real.clone()
    for j, c in enumerate(counts):
        score, _ = out.extras["power_significance"][j]
        kept = out.extras["power_keep"][j]
        for b in range(6):
            live = alive[b].nonzero().squeeze(1)
            budget = max(min(c, int(alive[b].sum())), int((prot[b] & alive[b]).sum()))
            others = live[~prot[b, live]]
            top = others[score[b, others].argsort(descending=True)[: budget - int((prot[b] & alive[b]).sum())]]
            want = torch.zeros_like(real[b])
            want[top] = True
            want |= prot[b] & alive[b]
            assert torch.equal(kept[b], want), (j, b)
        alive = kept
        if j + 1 < len(counts):
            assert torch.equal(out.kept_per_layer[j + 1], torch.minimum(torch.full_like(n, c), n))
    assert out.final_keep[:, 0].all()
    if protect_special:
        assert out.final_keep[protect.bool()].all()


@pytest.mark.parametrize("unit,retention", [("fraction", [0.6, 0.4, 0.3]), ("tokens", [50, 30, 12])])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_mask_mode_equals_prune_mode(batch_size, unit, retention):
    ids, mask = ragged_batch(9, 70, min_len=20)
    ids, mask = ids[1 : 1 + batch_size], mask[1 : 1 + batch_size]
    protect = _protect(mask, 3)
    enc = _encoder(stage="hard", retention=retention, retention_unit=unit)
    with torch.no_grad():
        m = enc(ids, mask, mode="mask", protect_mask=protect)
        p = enc(ids, mask, mode="prune", protect_mask=protect)
    assert torch.equal(m.final_keep, p.final_keep)
    assert torch.equal(m.kept_per_layer, p.kept_per_layer)
    for j in range(3):
        assert torch.equal(m.extras["power_keep"][j], p.extras["power_keep"][j]), j
    n = mask.sum(1)
    if unit == "fraction":
        want = [(n * r).ceil().long().clamp_min(3) for r in retention]
    else:
        want = [torch.minimum(torch.full_like(n, r), n) for r in retention]
    assert torch.equal(m.kept_per_layer[1], want[0]) and torch.equal(m.kept_per_layer[2], want[1])
    assert torch.equal(m.final_keep.sum(1), want[2])
    assert (m.final_keep.sum(1) < n).all()  # a model that really removed tokens
    kept = m.final_keep
    torch.testing.assert_close(m.last_hidden_state[kept], p.last_hidden_state[kept], atol=1e-5, rtol=1e-4)


# ---- soft stage --------------------------------------------------------------------------------------------------
def _soft(layers: int = 3, **kw) -> SkimEncoder:
    enc = _encoder(layers=layers, stage="soft", max_seq_length=64, **kw)
    enc.strategy.train()  # the backbone stays in eval mode: no dropout, deterministic
    return enc


def test_soft_extract_multiplies_each_output_by_the_retention_of_its_rank():
    ids, mask = ragged_batch(4, 40, min_len=20, seed=1)
    enc = _soft()
    N = enc.strategy.cfg.max_seq_length
    last = torch.linspace(1.0, 0.05, N)
    _set_retention(enc, [torch.ones(N), torch.ones(N), last])
    out = enc(ids, mask, mode="mask")
    attentions, dense = _hf_attentions(enc, ids, mask)
    real = mask.bool()
    # rank by the last layer's attention received ([CLS] first), as computed from the backbone's own attentions
    score = (attentions[-1] * real[:, None, :, None]).sum((1, 2))
    key = score.masked_fill(~real, float("-inf"))
    key[:, 0] = float("inf")
    rank = key.argsort(1, descending=True).argsort(1)
    expected = dense * last[rank][..., None]
    torch.testing.assert_close(out.last_hidden_state[real], expected[real], atol=1e-5, rtol=1e-4)
    assert torch.equal(out.final_keep, real)  # the soft stage removes nothing


def test_soft_stage_gradients_reach_the_retention_parameters():
    ids, mask = ragged_batch(4, 40, min_len=20)
    enc = _soft()
    out = enc(ids, mask, mode="mask")
    # a fixed random read-out: a plain sum of LayerNorm outputs is ~0 per token, so its gradient is float noise
    readout = torch.randn(out.last_hidden_state.shape[-1], generator=torch.Generator().manual_seed(0))
    task = out.last_hidden_state[:, 0].pow(2).sum() + (out.last_hidden_state[mask.bool()] @ readout).sum()
    task.backward()
    longest = int(mask.sum(1).max())
    for j, p in enumerate(enc.strategy.retention):
        assert p.grad is not None and p.grad[:longest].abs().gt(0).all(), j
        assert p.grad[longest:].abs().sum() == 0  # no token has those ranks: only the regulariser moves them


def test_mass_regulariser_hand_checked():
    enc = _soft(mass_coefficient=0.01, retention_lr_scale=4.0)
    g = torch.Generator().manual_seed(0)
    r = [torch.rand(64, generator=g) for _ in range(3)]
    _set_retention(enc, r)
    ids, mask = ragged_batch(2, 20, min_len=10)
    out = enc(ids, mask, mode="mask")
    loss = enc.strategy.aux_losses(out, {})["skim_loss"]
    expected = 0.01 * (1 * r[0].sum() + 2 * r[1].sum() + 3 * r[2].sum())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    grads = torch.autograd.grad(loss, list(enc.strategy.retention))
    for j, grad in enumerate(grads):
        # d loss / d p = lambda * j * s (r = s * p, j = 1..L)
        torch.testing.assert_close(grad, torch.full_like(grad, 0.01 * (j + 1) * 4.0))
    # no regulariser outside the soft stage's training
    enc.strategy.eval()
    assert enc.strategy.aux_losses(out, {}) == {}


def test_training_forward_clips_the_retention_to_unit_interval():
    enc = _soft()
    _set_retention(enc, [torch.linspace(-0.5, 1.7, 64)] * 3)
    ids, mask = ragged_batch(2, 20, min_len=10)
    enc(ids, mask, mode="mask")
    for j in range(3):
        r = enc.strategy.retention_values(j).detach()
        assert r.min() >= 0 and r.max() <= 1 + 1e-6
        assert r[0] == 0 and r[-1] == pytest.approx(1.0)
    assert int(enc.strategy.soft_steps) == 1


def test_learned_retention_is_rounded_monotone_and_prunes_at_evaluation():
    assert learned_counts(torch.tensor([30.3, 40.0, 12.0, 0.2])).tolist() == [31, 31, 12, 1]
    assert learned_counts(torch.tensor([30.3, 40.0, 12.0, 0.2]), "floor").tolist() == [30, 30, 12, 1]
    assert learned_counts(torch.tensor([30.5001, 29.4]), "round").tolist() == [31, 29]
    enc = _soft()
    _set_retention(enc, [torch.full((64,), 30.3 / 64), torch.full((64,), 40.0 / 64), torch.full((64,), 12.0 / 64)])
    ids, mask = ragged_batch(6, 50, min_len=20)
    enc(ids, mask, mode="mask")  # one configuration-search step (values already in [0, 1])
    assert enc.strategy.learned_retention() == [31, 31, 12]
    enc.eval()
    with torch.no_grad():
        out = enc(ids, mask, mode="prune")
    n = mask.sum(1)
    assert torch.equal(out.kept_per_layer[1], n.clamp_max(31)) and torch.equal(out.kept_per_layer[2], n.clamp_max(31))
    assert torch.equal(out.final_keep.sum(1), n.clamp_max(12))
    # the hard stage takes the learned retention from the soft stage's weights (model.init_checkpoint)
    hard = _encoder(stage="hard", max_seq_length=64)
    hard.load_state_dict(enc.state_dict())
    assert not any(p.requires_grad for p in hard.strategy.retention)  # frozen in re-training
    with torch.no_grad():
        again = hard(ids, mask, mode="prune")
    assert torch.equal(again.final_keep, out.final_keep)
    report = hard.strategy.eval_report(torch.tensor(6.0))  # torchmetrics hands a size-1 sum over as 0-dim
    assert report["retention"] == [31, 31, 12] and report["retention_unit"] == "tokens"
    assert report["hard_stage_overrides"].endswith("skim.retention=[31,31,12]")
    stats = enc.strategy.format_eval_stats(torch.tensor([6.0]))
    assert stats["retention_layer2"] == 12 and stats["mass_layer1"] == pytest.approx(40.0, rel=1e-5)


def test_hard_stage_without_any_retention_is_a_config_error():
    ids, mask = ragged_batch(2, 20, min_len=10)
    with pytest.raises(ConfigError, match="needs a retention"), torch.no_grad():
        _encoder(stage="hard")(ids, mask, mode="prune")


# ---- FLOPs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(FLOPS_SHAPES))
@pytest.mark.parametrize("mode", ["mask", "prune"])
def test_analytic_flops_match_the_flop_counter(shape, mode):
    enc = flops_encoder(shape, build_strategy({"name": "power", "stage": "hard", "retention": [0.6, 0.4, 0.3]}))
    L = 150
    ids = torch.randint(1, 200, (1, L))
    out = assert_flops_match(enc, ids, torch.ones_like(ids), mode)
    assert out.kept_per_layer[1:, 0].tolist() == [90, 60] and int(out.final_keep.sum()) == 45  # really removed


# ---- tasks -------------------------------------------------------------------------------------------------------
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def test_power_runs_on_qa(minilm_path):
    from skim.tasks.qa_module import QAModule

    ids, mask = ragged_batch(4, 60, vocab=1000, min_len=40)
    protect = _protect(mask, 8)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "protect_mask": protect,
        "start_positions": torch.tensor([10, 12, 14, 16]),
        "end_positions": torch.tensor([11, 13, 15, 16]),
    }
    model = {"pretrained_name_or_path": minilm_path, "random_init": True, "config_overrides": TINY}
    soft = QAModule(model=model, skim={"name": "power", "stage": "soft", "max_seq_length": 64}).train()
    start, end, out = soft(batch)
    terms = soft._losses(start, end, out, batch)
    assert set(terms) == {"qa_loss", "skim_loss", "loss"}
    terms["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in soft.strategy.retention)
    hard = QAModule(model=model, skim={"name": "power", "stage": "hard", "retention": [0.5, 0.5]}).eval()
    with torch.no_grad():
        start, end, out = hard(batch)
    removed = mask.bool() & ~out.final_keep
    assert removed.any() and out.final_keep[protect.bool()].all()
    assert (start[removed] == -100.0).all() and (start[out.final_keep] > -100.0).all()


def test_power_runs_on_cls(minilm_path):
    from skim.tasks.cls_module import ClassificationModule

    ids, mask = ragged_batch(4, 60, vocab=1000, min_len=40)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "protect_mask": _protect(mask, 1),
        "labels": torch.tensor([0, 1, 1, 0]),
    }
    model = {"pretrained_name_or_path": minilm_path, "random_init": True, "config_overrides": TINY}
    module = ClassificationModule(
        model=model, skim={"name": "power", "stage": "soft", "max_seq_length": 64}, num_labels=2
    ).train()
    logits, out = module(batch)
    terms = module._losses(logits, out, batch)
    assert set(terms) == {"task_loss", "skim_loss", "loss"}
    terms["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.strategy.retention)
    hard = ClassificationModule(
        model=model, skim={"name": "power", "stage": "hard", "retention": [0.5, 0.25]}, num_labels=2
    )
    hard.eval()
    with torch.no_grad():
        logits, out = hard(batch)
    assert torch.equal(out.final_keep.sum(1), (mask.sum(1) * 0.25).ceil().long()) and out.final_keep[:, 0].all()
    assert torch.isfinite(logits).all()


# ---- configuration -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options,match",
    [
        ({"stage": "medium"}, "stage"),
        ({"retention_unit": "percent"}, "retention_unit"),
        ({"rounding": "up"}, "rounding"),
        ({"mass_coefficient": -1.0}, "mass_coefficient"),
        ({"retention_lr_scale": 0.0}, "retention_lr_scale"),
        ({"max_seq_length": 0}, "max_seq_length"),
        ({"stage": "soft", "retention": [1.0, 0.5]}, "stage=hard"),
        ({"stage": "hard", "retention": [1.0, 1.5]}, r"\(0, 1\]"),
        ({"stage": "hard", "retention": [0.0]}, r"\(0, 1\]"),
        ({"stage": "hard", "retention": [0.5, 0.8]}, "non-increasing"),
        ({"stage": "hard", "retention": []}, "empty"),
        ({"stage": "hard", "retention": [64, 32.5], "retention_unit": "tokens"}, "whole numbers"),
        ({"stage": "hard", "retention": [64, 0], "retention_unit": "tokens"}, "whole numbers"),
        ({"retension": [1.0]}, "unknown option"),
        ({"mass_coefficient": "abc"}, "invalid option"),
    ],
)
def test_bad_config_values_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        build_strategy({"name": "power", **options})


def test_model_dependent_config_errors():
    with pytest.raises(ConfigError, match="4 values for a 3-layer model"):
        _encoder(stage="hard", retention=[1.0, 0.5, 0.5, 0.5])
    with pytest.raises(ConfigError, match="attention probabilities"):
        PowerBert.check_compatible("qa", "sdpa")
    enc = _soft()
    ids, mask = ragged_batch(2, 70, min_len=60)
    with pytest.raises(ConfigError, match="max_seq_length=64"):
        enc(ids, mask, mode="mask")
