"""Transkimmer: bias-init equality with dense, mask (fixed) == prune, loss and gradients, faithful flags."""

from __future__ import annotations

import pytest
import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.errors import ConfigError
from skim.strategies import build_strategy
from skim.strategies.transkimmer import ATTN_NAME
from tests.conftest import ragged_batch, tiny_bert
from tests.helpers.runs import compose_cfg


def _encoder(seed=0, spread: float | None = None, **kw) -> SkimEncoder:
    enc = SkimEncoder(tiny_bert(attn=ATTN_NAME, seed=seed), build_strategy({"name": "transkimmer", **kw})).eval()
    if spread is not None:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():  # untrained predictors that keep some tokens and skim others
            for p in enc.strategy.predictors.values():
                last = p.net[-1]
                last.weight.copy_(torch.randn(last.weight.shape, generator=g) * spread)
                last.bias.copy_(torch.tensor([0.0, 1.0]))
    return enc


def test_bias_init_keeps_everything_and_equals_dense():
    ids, mask = ragged_batch(8, 70, min_len=20)
    enc = _encoder(skim_coefficient=0.0)
    dense = SkimEncoder(tiny_bert(attn="sdpa", seed=0), build_strategy({"name": "none"})).eval()
    dense.backbone.load_state_dict(enc.backbone.state_dict())
    with torch.no_grad():
        a = enc(ids, mask, mode="prune")
        b = dense(ids, mask, mode="prune")
    real = mask.bool()
    assert torch.equal(a.final_keep, real)
    assert torch.equal(a.kept_per_layer, b.kept_per_layer)
    assert torch.equal(a.last_hidden_state[real], b.last_hidden_state[real])


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("decision", ["argmax", "expected"])
def test_additive_mask_mode_equals_prune_mode(batch_size, decision):
    enc = _encoder(spread=1.0, eval_decision=decision)
    ids, mask = ragged_batch(9, 70, min_len=20)
    ids, mask = ids[1 : 1 + batch_size], mask[1 : 1 + batch_size]
    with torch.no_grad():
        m = enc(ids, mask, mode="mask")
        p = enc(ids, mask, mode="prune")
    assert torch.equal(m.final_keep, p.final_keep)
    assert torch.equal(m.kept_per_layer, p.kept_per_layer)
    assert (m.kept_per_layer[-1] < mask.sum(1)).all() and (m.kept_per_layer[-1] > 1).any()
    # kept counts never grow (cumulative mask) and [CLS] survives
    assert (m.kept_per_layer[1:] <= m.kept_per_layer[:-1]).all()
    assert m.final_keep[:, 0].all()
    real = mask.bool()
    torch.testing.assert_close(m.last_hidden_state[real], p.last_hidden_state[real], atol=1e-5, rtol=1e-4)


def test_multiply_mode_is_the_papers_unnormalised_masking():
    fixed = _encoder(spread=1.0)
    paper = _encoder(spread=1.0, mask_mode="multiply")
    ids, mask = ragged_batch(4, 70, min_len=60)
    with torch.no_grad():
        a = fixed(ids, mask, mode="mask")
        b = paper(ids, mask, mode="mask")
    assert torch.equal(a.final_keep, b.final_keep)
    keep = a.final_keep & ~(a.kept_per_layer[-1] == mask.sum(1))[:, None]
    assert not torch.allclose(a.last_hidden_state[keep], b.last_hidden_state[keep], atol=1e-4)


def test_gradients_reach_predictors_from_both_losses():
    enc = _encoder(spread=0.5).train()
    ids, mask = ragged_batch(4, 40, min_len=30)
    out = enc(ids, mask, mode="mask")
    skim = enc.strategy.aux_losses(out, {})["skim_loss"]
    skim.backward(retain_graph=True)
    for name, p in enc.strategy.predictors.named_parameters():
        if name.endswith("net.4.weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    enc.zero_grad()
    # the task loss alone also reaches the predictors, through the straight-through mask
    out.last_hidden_state[:, 1:].pow(2).mean().backward()
    grads = [p.grad for n, p in enc.strategy.predictors.named_parameters() if n.endswith("net.4.weight")]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("denominator", ["real", "padded"])
def test_skim_loss_denominators_hand_checked(denominator):
    # predictors that skim every token but [CLS] (bias -50: the Gumbel noise cannot flip it)
    enc = _encoder(bias_init=-50.0, loss_denominator=denominator, skim_coefficient=1.0).train()
    ids, mask = ragged_batch(3, 10, min_len=4)
    out = enc(ids, mask, mode="mask")
    loss = enc.strategy.aux_losses(out, {})["skim_loss"].item()
    if denominator == "real":
        expected = (1.0 / mask.sum(1).float()).mean().item()  # one kept token ([CLS]) over the real tokens
    else:
        expected = 1.0 / 10  # the original: kept (padding included) over the padded length
    assert loss == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("decision", ["argmax", "expected"])
def test_eval_decisions_are_deterministic_unless_faithful_gumbel(decision):
    ids, mask = ragged_batch(4, 50, min_len=30)
    det = _encoder(spread=1.0, eval_decision=decision)
    with torch.no_grad():
        a, b = det(ids, mask, mode="prune"), det(ids, mask, mode="prune")
    assert torch.equal(a.final_keep, b.final_keep)
    sto = _encoder(spread=1.0, eval_decision="gumbel")
    with torch.no_grad():
        keeps = [sto(ids, mask, mode="prune").final_keep for _ in range(5)]
    assert any(not torch.equal(keeps[0], k) for k in keeps[1:])


def test_expected_decision_keeps_the_expected_count_of_the_likeliest_live_tokens():
    """eval_decision=expected, by hand: per example the round(sum of P(keep)) live tokens with the highest P(keep);
    dead tokens are neither counted nor kept. argmax keeps only P(keep) > 0.5."""
    strategy = build_strategy({"name": "transkimmer", "eval_decision": "expected"}).eval()

    def decide(p_keep, alive, decision="expected"):
        strategy.cfg.eval_decision = decision
        logits = torch.stack([torch.zeros_like(p_keep), torch.logit(p_keep.clamp(1e-6, 1 - 1e-6))], -1)
        return strategy._decide(logits, alive).tolist()

    p_keep = torch.tensor([[0.45, 0.40, 0.30, 0.20, 0.10, 0.90], [0.30, 0.05, 0.35, 0.05, 0.25, 0.0]])
    alive = torch.tensor([[True] * 5 + [False]] * 2)
    # row 0: sum 1.45 -> the 1 likeliest live token (the dead 0.90 neither counts nor is kept); row 1: 1.0 -> 0.35
    assert decide(p_keep, alive) == [[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]]
    assert [row[:5] for row in decide(p_keep, alive, "argmax")] == [[0] * 5] * 2  # (the cumulative mask drops the dead)
    alive[0, 5] = True  # sum 2.35 -> the 0.90 and the 0.45; argmax: the 0.90 alone
    assert decide(p_keep, alive)[0] == [1, 0, 0, 0, 0, 1]
    assert decide(p_keep, alive, "argmax")[0] == [0, 0, 0, 0, 0, 1]
    # 64 equal P(keep) = 0.4: sum 25.6 -> 26 tokens, the earliest (an unstable sort takes others)
    assert decide(torch.full((1, 64), 0.4), torch.ones(1, 64, dtype=torch.bool)) == [[1] * 26 + [0] * 38]


def test_expected_decision_leaves_cls_out_of_the_count():
    """[CLS] is always kept: it neither counts towards the expected number nor takes one of its places, so an example
    keeps [CLS] + round(sum of the other live tokens' P(keep)), what training's sampling keeps on average."""
    enc = _encoder(spread=1.0, eval_decision="expected")
    ids, mask = ragged_batch(4, 50, min_len=30)
    seen = []
    decide = enc.strategy._decide
    enc.strategy._decide = lambda logits, alive: seen.append(alive.clone()) or decide(logits, alive)
    with torch.no_grad():
        enc(ids, mask, mode="mask")
    assert seen and all(not a[:, 0].any() for a in seen)


def test_bad_flags_are_config_errors():
    with pytest.raises(ConfigError, match="mask_mode"):
        build_strategy({"name": "transkimmer", "mask_mode": "divide"})
    with pytest.raises(ConfigError, match="train_mode"):
        build_strategy({"name": "transkimmer", "train_mode": "prune"})
    with pytest.raises(ConfigError, match="coefficient_warmup"):
        build_strategy({"name": "transkimmer", "coefficient_warmup": 1.5})
    from skim.strategies.transkimmer import Transkimmer

    with pytest.raises(ConfigError, match="attn_implementation"):
        Transkimmer.check_compatible("cls", "eager")


def test_transkimmer_runs_on_qa(minilm_path):
    from skim.tasks.qa_module import QAModule

    module = QAModule(
        model={"pretrained_name_or_path": minilm_path, "random_init": True,
               "config_overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}},
        skim={"name": "transkimmer", "skim_coefficient": 0.3, "bias_init": 0.0},  # unbiased: some tokens skimmed
    ).train()
    ids, mask = ragged_batch(4, 60, vocab=1000, min_len=40)
    batch = {"input_ids": ids, "attention_mask": mask, "start_positions": torch.tensor([3, 5, 7, 9]), "end_positions": torch.tensor([4, 6, 8, 9])}
    start, end, out = module(batch)
    terms = module._losses(start, end, out, batch)
    assert set(terms) == {"qa_loss", "skim_loss", "loss"}
    # the default qa_skimmed=exclude: a token skimmed in training can no more be the answer than one pruned at eval
    assert (~out.final_keep).any() and (start[~out.final_keep] == -100.0).all() and (start[out.final_keep] > -100.0).all()
    terms["loss"].backward()
    module.eval()
    with torch.no_grad():
        start, end, out = module(batch)
    assert start.shape == ids.shape and torch.isfinite(start).all()


@pytest.mark.parametrize("skimmed_answer_loss", ["backbone", "predictors"])
def test_a_skimmed_answer_trains_only_the_predictors_when_asked(minilm_path, skimmed_answer_loss):
    """skimmed_answer_loss=predictors: the span loss of a feature whose sampled mask skimmed its gold answer reaches only
    the keep weights (so the predictors learn to keep answers), not the span head or the last layer, which no
    predictor reads; features whose answer was kept train everything, and the loss values are those of the default."""
    import torch.nn.functional as F

    from skim.metrics.answers import answer_reached
    from skim.tasks.qa_module import QAModule

    torch.manual_seed(0)
    module = QAModule(
        model={"pretrained_name_or_path": minilm_path, "random_init": True,
               "config_overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}},
        skim={"name": "transkimmer", "skim_coefficient": 0.0, "bias_init": 0.0, "skimmed_answer_loss": skimmed_answer_loss},
    ).train()
    ids, mask = ragged_batch(8, 60, vocab=1000, min_len=40)
    sp, ep = torch.tensor([3, 5, 7, 9, 11, 13, 15, 0]), torch.tensor([4, 6, 8, 9, 12, 13, 17, 0])
    batch = {"input_ids": ids, "attention_mask": mask, "start_positions": sp, "end_positions": ep}
    torch.manual_seed(1)
    start, end, out = module(batch)
    lost = ~answer_reached(out.final_keep, sp, ep)
    assert lost.any() and (~lost).any() and not lost[7]  # the answerless feature points at [CLS], always kept
    per_row = F.cross_entropy(start, sp, reduction="none") + F.cross_entropy(end, ep, reduction="none")
    head, last_layer = module.qa_outputs.weight, module.encoder.adapter.layers[1].output.dense.weight
    predictor = module.encoder.strategy.predictors["1"].net[1].weight
    params = [head, last_layer, predictor]
    g_lost = torch.autograd.grad(per_row[lost].sum(), params, retain_graph=True, allow_unused=True)
    g_kept = torch.autograd.grad(per_row[~lost].sum(), params, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in g_kept)
    assert g_lost[2] is not None and g_lost[2].abs().sum() > 0  # the pull towards keeping the answer
    if skimmed_answer_loss == "predictors":
        assert all(g is None or g.abs().sum() == 0 for g in g_lost[:2])
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in g_lost[:2])
    # the same forward values as the default, whatever the gradient
    reference = QAModule(
        model={"pretrained_name_or_path": minilm_path, "random_init": True,
               "config_overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}},
        skim={"name": "transkimmer", "skim_coefficient": 0.0, "bias_init": 0.0},
    ).train()
    reference.load_state_dict(module.state_dict())
    torch.manual_seed(1)
    ref_start, _, _ = reference(batch)
    torch.testing.assert_close(ref_start, start)
    with pytest.raises(ConfigError, match="skimmed_answer_loss"):
        build_strategy({"name": "transkimmer", "qa_skimmed": "forward", "skimmed_answer_loss": "predictors"})


def test_straight_through_gradient_reaches_skimmed_tokens():
    """The task loss must tell the predictor what keeping a *skimmed* token would change (else it can only ever
    learn to skim): the gradient w.r.t. the mask is non-zero at positions where the mask is 0."""
    enc = _encoder(spread=1.0).train()
    ids, mask = ragged_batch(4, 40, min_len=40)
    out = enc(ids, mask, mode="mask")
    m = out.extras["tk_masks"][0][0]
    task = out.last_hidden_state[:, 0].pow(2).sum()
    (grad,) = torch.autograd.grad(task, m)
    dropped = (m == 0) & mask.bool()
    assert dropped.any()
    assert grad[dropped].abs().gt(0).float().mean() > 0.9


@pytest.mark.parametrize("chain", ["product", "until_skipped"])
def test_keep_weight_chain_decides_whether_later_skims_gate_the_gradient(chain):
    """A token skimmed before layer 0 whose later decisions (sampled on its stale state) include a "skim": under
    ``product`` (the original) its final keep weight passes no gradient back to the layer-0 decision, under
    ``until_skipped`` all of it; tokens whose later decisions are all "keep" pass it under both. Same forward values.
    (d w / d m0 is 1 or 0 up to the small path through the later predictors' soft inputs.)"""
    weights = {}
    for name in dict.fromkeys(("product", chain)):
        # the padded denominator's own product (padding counted, as the original) follows the same chain
        enc = _encoder(spread=1.0, keep_weight_chain=name, loss_denominator="padded").train()
        ids, mask = ragged_batch(4, 40, min_len=40)
        torch.manual_seed(3)
        out = enc(ids, mask, mode="mask")
        weights[name] = out.final_keep_weight
    first, *later = (out.extras["tk_decisions"][i] for i in range(3))
    padded_weight = out.extras["tk_masks"][-1][2]
    (grad,) = torch.autograd.grad(out.final_keep_weight.sum(), first, retain_graph=True)
    (grad_padded,) = torch.autograd.grad(padded_weight.sum(), first)
    torch.testing.assert_close(weights[chain], weights["product"])
    skimmed = mask.bool() & (first == 0)
    later_keep = torch.stack(later).detach().prod(0) == 1
    assert (skimmed & later_keep).any() and (skimmed & ~later_keep).any()
    expected = 0.0 if chain == "product" else 1.0
    for g in (grad, grad_padded):
        assert (g[skimmed & later_keep] - 1).abs().max() < 0.1
        assert (g[skimmed & ~later_keep] - expected).abs().max() < 0.1
    with pytest.raises(ConfigError, match="keep_weight_chain"):
        build_strategy({"name": "transkimmer", "keep_weight_chain": "sum"})


def test_qa_exclude_is_the_span_softmax_over_kept_tokens():
    """qa_skimmed=exclude (default): skimmed positions get Block-Skim's -100 and, with straight-through keep weights,
    d loss / d w is p - y of the softmax over kept positions, at kept *and* skimmed positions (a skimmed answer must
    still pull its keep weight up)."""
    from skim.state import EncoderOutput
    from skim.tasks.qa_module import exclude_skimmed

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 12, generator=g) * 3
    w = (torch.rand(3, 12, generator=g) > 0.4).float()
    w[:, 0] = 1.0
    target = torch.tensor([0, 3, 5])
    w[1, 3] = 1.0
    w[2, 5] = 0.0  # a skimmed answer: a large but finite loss, and a pull towards keep
    w.requires_grad_(True)
    out = EncoderOutput(last_hidden_state=torch.zeros(3, 12, 1), final_keep=w.detach() > 0, kept_per_layer=torch.zeros(1, 3),
                        tokens_before_decision=torch.zeros(1, 3), real_tokens=torch.full((3,), 12), special_per_layer=torch.zeros(1, 3),
                        special_tokens=torch.ones(3), extras={}, final_keep_weight=w)
    z = exclude_skimmed(logits, out, -100.0)
    kept = w.detach() > 0
    assert torch.equal(z[kept], logits[kept]) and (z[~kept] == -100.0).all()
    loss = torch.nn.functional.cross_entropy(z, target, reduction="sum")
    (grad,) = torch.autograd.grad(loss, w)
    assert torch.isfinite(grad).all() and torch.isfinite(loss)
    p = torch.softmax(z.detach(), -1)
    expected = p - torch.nn.functional.one_hot(target, 12)
    torch.testing.assert_close(grad, expected)
    assert grad[2, 5] == pytest.approx(-1.0, abs=1e-6)
    # the hard-mask path (evaluation, Block-Skim) writes the same values
    out.final_keep_weight = None
    assert torch.equal(exclude_skimmed(logits, out, -100.0), z.detach())


@pytest.mark.parametrize("qa_skimmed", ["forward", "exclude"])
def test_keep_weights_reach_stale_states_only_when_they_are_read(qa_skimmed):
    """A token skimmed before layer 0 keeps its embedding as its output. With qa_skimmed=forward (the original) the
    span head reads that stale state, so the straight-through weight carries the gradient there; with exclude the
    state is never read and the predictor gets no gradient from it."""
    enc = _encoder(spread=1.0, qa_skimmed=qa_skimmed).train()
    ids, mask = ragged_batch(4, 40, min_len=40)
    torch.manual_seed(0)
    out = enc(ids, mask, mode="mask")
    dropped0 = (out.extras["tk_masks"][0][0] == 0) & mask.bool()
    assert dropped0.any()
    weight = enc.strategy.predictors["0"].net[-1].weight
    (grad,) = torch.autograd.grad(out.last_hidden_state[dropped0].pow(2).sum(), weight, allow_unused=True)
    if qa_skimmed == "forward":
        assert grad is not None and grad.abs().sum() > 0
    else:
        assert grad is None or grad.abs().sum() == 0


def test_the_default_decision_is_expected_in_the_schema_and_the_yaml(tmp_path):
    """The default evaluation decision (README: argmax lost 25 points on IMDB) is the same whichever way a strategy is
    built: from the dataclass or from conf/skim/transkimmer.yaml."""
    from skim.strategies.transkimmer import TranskimmerConfig

    cfg = compose_cfg(["skim=transkimmer", "data=synthetic_sentiment"], output_dir=tmp_path)
    assert TranskimmerConfig().eval_decision == cfg.skim.eval_decision == "expected"
