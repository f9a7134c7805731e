"""Learned Token Pruning: importance = mean attention received, hard thresholds with protected tokens, mask == prune,
the soft stage (mask x layer output, gradients, regulariser), thresholds carried stage 1 -> stage 2, FLOPs, QA/cls."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from skim.encoders.skim_encoder import SkimEncoder
from skim.errors import ConfigError
from skim.strategies import build_strategy
from skim.strategies.ltp import LearnedTokenPruning, token_importance
from tests.conftest import FLOPS_SHAPES, assert_flops_match, flops_encoder, ragged_batch, tiny_bert


def _encoder(layers: int = 4, seed: int = 0, dropout: float | None = None, sharpen: float = 12.0, **kw) -> SkimEncoder:
    """A tiny BERT whose query and key weights are scaled by ``sharpen``: random-init attention is nearly uniform (every
    importance within 1 % of 1/n), sharper scores spread the importance as a trained model's do."""
    if dropout is None:
        backbone = tiny_bert(attn="eager", layers=layers, seed=seed)
    else:
        torch.manual_seed(seed)
        cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=512,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        cfg._attn_implementation = "eager"
        backbone = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for layer in backbone.encoder.layer:
            layer.attention.self.query.weight.mul_(sharpen)
            layer.attention.self.key.weight.mul_(sharpen)
    return SkimEncoder(backbone, build_strategy({"name": "ltp", **kw})).eval()


def _protect(mask: torch.Tensor, first: int) -> torch.Tensor:
    protect = torch.zeros_like(mask)
    protect[:, :first] = 1
    return protect * mask


@torch.no_grad()
def _calibrate(enc: SkimEncoder, ids, mask, q: float = 0.4, protect=None) -> torch.Tensor:
    """Set each pruning layer's threshold, in order, to the q-quantile of the live importance it sees (a hard-stage
    forward with the earlier thresholds already set), so that every layer really prunes part of its tokens."""
    strategy = enc.strategy
    strategy.thresholds.zero_()
    training = enc.training
    enc.eval()
    for i in strategy.skim_layers:
        out = enc(ids, mask, mode="mask", protect_mask=protect)
        s, alive = out.extras["ltp_scores"][i]
        strategy.thresholds[i] = torch.quantile(s[alive], q)
    enc.train(training)
    return strategy.thresholds.detach().clone()


# ---- importance ----------------------------------------------------------------------------------------------
def test_importance_is_the_mean_attention_received_hand_checked():
    # one example, two heads, three tokens; the third is dead (padding or pruned): its query row is not counted
    h0 = [[0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.3, 0.3, 0.4]]
    h1 = [[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.1, 0.1, 0.8]]
    probs = torch.tensor([[h0, h1]])
    alive = torch.tensor([[True, True, False]])
    # key 0 receives 0.5 + 0.2 (head 0) + 1.0 + 0.6 (head 1) = 2.3 from the two live queries; key 1: 1.3 + 0.4 = 1.7
    live = token_importance(probs, alive, "live")
    torch.testing.assert_close(live, torch.tensor([[2.3 / 4, 1.7 / 4, 0.0]]))  # / (2 heads x 2 live queries)
    padded = token_importance(probs, alive, "padded")
    torch.testing.assert_close(padded, torch.tensor([[2.3 / 6, 1.7 / 6, 0.0]]))  # the code: / (2 heads x 3 rows)


def test_encoder_scores_are_computed_from_the_layers_own_attention():
    """The scores a pruning layer sees equal the importance recomputed from HF's returned attentions (dense model, so
    nothing was pruned before layer 1), with padding queries left out."""
    enc = _encoder(skim_layers=[1], stage="hard")
    ids, mask = ragged_batch(4, 40, min_len=20)
    with torch.no_grad():
        out = enc(ids, mask, mode="mask")
        attn = enc.backbone(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[1]  # [B, H, n, n]
    real = mask.bool()
    H = attn.shape[1]
    expected = torch.einsum("bhqk,bq->bk", attn, real.float()) / (H * real.sum(1, keepdim=True))
    scores, alive = out.extras["ltp_scores"][1]
    assert torch.equal(alive, real)
    torch.testing.assert_close(scores[real], expected[real], atol=1e-6, rtol=1e-5)
    assert (scores[~real] == 0).all()
    # the mean live importance is 1/n: each live query spreads one unit over the live keys
    torch.testing.assert_close(scores.sum(1), torch.ones(4))


# ---- hard pruning ----------------------------------------------------------------------------------------------
def test_hard_threshold_prunes_below_threshold_and_keeps_protected_tokens():
    enc = _encoder(stage="hard")
    # importance is normalised per example (mean 1/n): similar lengths, so one threshold prunes in every example
    ids, mask = ragged_batch(8, 70, min_len=55)
    protect = _protect(mask, 4)
    _calibrate(enc, ids, mask, q=0.6, protect=protect)
    with torch.no_grad():
        out = enc(ids, mask, mode="prune", protect_mask=protect)
    first = enc.strategy.skim_layers[0]
    s, alive = out.extras["ltp_scores"][first]  # prune mode: packed coordinates (nothing pruned before layer 1)
    assert torch.equal(alive, mask.bool())
    theta = enc.strategy.thresholds[first]
    below = alive & (s < theta)
    prot = protect.bool()
    assert (below & prot).any(), "the check needs protected tokens whose importance is below the threshold"
    expected = alive & ((s >= theta) | prot)
    assert torch.equal(out.kept_per_layer[first + 1], expected.sum(1))
    assert (out.kept_per_layer[first + 1] < mask.sum(1)).all()
    # cumulative: a pruned token never returns; protected tokens ([CLS] among them) survive every layer
    assert (out.kept_per_layer[1:] <= out.kept_per_layer[:-1]).all()
    assert out.final_keep[prot].all()
    assert (out.kept_per_layer[-1] > 4).any()


def test_cls_is_kept_without_protected_tokens_and_protect_special_false_drops_the_others():
    ids, mask = ragged_batch(6, 50, min_len=30)
    protect = _protect(mask, 4)
    enc = _encoder(stage="hard", protect_special=False)
    _calibrate(enc, ids, mask, q=0.9)
    with torch.no_grad():
        out = enc(ids, mask, mode="prune", protect_mask=protect)
    assert out.final_keep[:, 0].all()
    assert not out.final_keep[:, 1:4][protect[:, 1:4].bool()].all()


@pytest.mark.parametrize("norm", ["live", "padded"])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_hard_mask_mode_equals_prune_mode(batch_size, norm):
    enc = _encoder(stage="hard", importance_norm=norm)
    ids, mask = ragged_batch(9, 70, min_len=50)
    ids, mask = ids[1 : 1 + batch_size], mask[1 : 1 + batch_size]
    protect = _protect(mask, 3)
    _calibrate(enc, ids, mask, q=0.3, protect=protect)
    with torch.no_grad():
        m = enc(ids, mask, mode="mask", protect_mask=protect)
        p = enc(ids, mask, mode="prune", protect_mask=protect)
    assert torch.equal(m.final_keep, p.final_keep)
    assert torch.equal(m.kept_per_layer, p.kept_per_layer)
    assert (m.kept_per_layer[-1] < mask.sum(1)).all() and (m.kept_per_layer[-1] > 3).any()
    kept = m.final_keep
    torch.testing.assert_close(m.last_hidden_state[kept], p.last_hidden_state[kept], atol=1e-5, rtol=1e-4)


# ---- soft stage ----------------------------------------------------------------------------------------------
def test_soft_stage_multiplies_the_layer_output_by_the_mask_and_removes_nothing():
    layers = 3
    ltp = _encoder(layers=layers, dropout=0.0, skim_layers=[layers - 1], temperature=1e-2)
    dense = SkimEncoder(tiny_bert(attn="eager", layers=layers), build_strategy({"name": "none"})).eval()
    dense.backbone.load_state_dict(ltp.backbone.state_dict())
    ids, mask = ragged_batch(4, 40, min_len=20)
    protect = _protect(mask, 2)
    with torch.no_grad():
        ltp.strategy.thresholds[layers - 1] = 1.0 / 30
        out = ltp.train()(ids, mask, mode="mask", protect_mask=protect)
        ref = dense(ids, mask, mode="mask", protect_mask=protect)
    real = mask.bool()
    assert torch.equal(out.final_keep, real) and (out.kept_per_layer == mask.sum(1)).all()
    m, _ = out.extras["ltp_masks"][layers - 1]
    s, _ = out.extras["ltp_scores"][layers - 1]
    expected_m = torch.sigmoid((s - 1.0 / 30) / 1e-2)
    prot = protect.bool()
    torch.testing.assert_close(m[real & ~prot], expected_m[real & ~prot])
    assert (m[prot] == 1).all() and (m[real] < 0.5).any() and (m[real] > 0.5).any()
    scaled = ref.last_hidden_state * m[..., None]
    torch.testing.assert_close(out.last_hidden_state[real], scaled[real], atol=1e-5, rtol=1e-4)
    # the same model evaluates with hard pruning
    with torch.no_grad():
        ev = ltp.eval()(ids, mask, mode="prune", protect_mask=protect)
    assert "ltp_masks" not in ev.extras
    assert torch.equal(ev.final_keep, real & ((s >= 1.0 / 30) | prot))


def test_soft_stage_gradients_reach_the_thresholds_from_both_losses():
    enc = _encoder(temperature=1e-2)
    ids, mask = ragged_batch(4, 40, min_len=30)
    _calibrate(enc, ids, mask, q=0.5)
    enc.train()
    out = enc(ids, mask, mode="mask")
    layers = enc.strategy.skim_layers
    (g_task,) = torch.autograd.grad(out.last_hidden_state.pow(2).mean(), enc.strategy.thresholds, retain_graph=True)
    (g_reg,) = torch.autograd.grad(enc.strategy.aux_losses(out, {})["skim_loss"], enc.strategy.thresholds)
    assert (g_task[layers] != 0).all()
    # raising a threshold lowers every mask: the regulariser pushes every threshold up
    assert (g_reg[layers] < 0).all()
    assert (g_task[0] == 0) and (g_reg[0] == 0)  # layer 0 does not prune
    # the training diagnostics: threshold, share of live tokens a hard decision would keep, mean soft mask
    diag = enc.strategy.train_diagnostics(out, {})
    for i in layers:
        s, alive = out.extras["ltp_scores"][i]
        theta = enc.strategy.thresholds[i].detach()
        assert diag[f"threshold_layer{i}"] == theta
        share = ((s >= theta) & alive).sum() / alive.sum()
        assert diag[f"above_threshold_layer{i}"].item() == pytest.approx(share.item())
        assert 0 < diag[f"soft_keep_layer{i}"] < 1


@pytest.mark.parametrize("denominator", ["real", "padded"])
def test_mask_regulariser_hand_checked(denominator):
    T, lam = 1e-2, 0.3
    enc = _encoder(temperature=T, mask_coefficient=lam, loss_denominator=denominator)
    ids, mask = ragged_batch(5, 30, min_len=10)
    protect = _protect(mask, 2)
    theta = _calibrate(enc, ids, mask, q=0.5, protect=protect)
    enc.train()
    out = enc(ids, mask, mode="mask", protect_mask=protect)
    loss = enc.strategy.aux_losses(out, {})["skim_loss"]
    (grad,) = torch.autograd.grad(loss, enc.strategy.thresholds)
    real, prot = mask.bool(), protect.bool() | (torch.arange(30) == 0)
    value, dtheta = 0.0, torch.zeros_like(theta)
    for i in enc.strategy.skim_layers:
        s, _ = out.extras["ltp_scores"][i]  # padding: importance 0
        m = torch.sigmoid((s - theta[i]) / T).double()
        dm = -m * (1 - m) / T  # d m / d theta
        m, dm = m.masked_fill(prot, 1.0), dm.masked_fill(prot, 0.0)
        if denominator == "real":
            n = mask.sum(1).double()
            value += float(((m * real).sum(1) / n).mean())
            dtheta[i] = float(((dm * real).sum(1) / n).mean())
        else:  # the code: mask.mean() over the padded batch, padding included
            value += float(m.mean())
            dtheta[i] = float(dm.mean())
    assert loss.item() == pytest.approx(lam * value, rel=1e-5)
    # the last layer's mask reaches the loss directly; an earlier one also through the scores of the layers after it
    last = enc.strategy.skim_layers[-1]
    assert grad[last].item() == pytest.approx(lam * dtheta[last].item(), rel=1e-4)
    assert grad[last] != 0 and (grad[0] == 0)
    if denominator == "padded":
        assert not real.all()  # padding really entered the mean


# ---- stages, checkpoints, tasks ------------------------------------------------------------------------------
def _tiny_model_cfg(minilm_path: str, **extra) -> dict:
    return {"pretrained_name_or_path": minilm_path, "random_init": True,
            "config_overrides": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
                                 "intermediate_size": 64},
            **extra}


def _qa_batch():
    ids, mask = ragged_batch(4, 60, vocab=1000, min_len=40)
    return {"input_ids": ids, "attention_mask": mask, "protect_mask": _protect(mask, 5),
            "start_positions": torch.tensor([10, 12, 20, 30]), "end_positions": torch.tensor([11, 14, 20, 33])}


def test_thresholds_travel_from_stage_1_to_stage_2_and_are_frozen_there(minilm_path, tmp_path):
    from skim.tasks.qa_module import QAModule

    soft = QAModule(model=_tiny_model_cfg(minilm_path), skim={"name": "ltp"}, optim={"scheduler": "none"})
    learnt = torch.tensor([0.0, 0.017, 0.029])
    with torch.no_grad():
        soft.strategy.thresholds.copy_(learnt)
    groups = soft.configure_optimizers().param_groups
    assert any(p is soft.strategy.thresholds for g in groups if g["weight_decay"] == 0.0 for p in g["params"])
    path = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": soft.state_dict()}, path)

    hard = QAModule(model=_tiny_model_cfg(minilm_path, init_checkpoint=str(path)),
                    skim={"name": "ltp", "stage": "hard"}, optim={"scheduler": "none"})
    assert not torch.equal(hard.strategy.thresholds.detach(), learnt)  # its own init until the checkpoint is read
    hard.init_from_checkpoint()
    assert torch.equal(hard.strategy.thresholds.detach(), learnt)
    assert not hard.strategy.thresholds.requires_grad
    params = [p for g in hard.configure_optimizers().param_groups for p in g["params"]]
    assert all(p is not hard.strategy.thresholds for p in params)
    # stage 2 trains with hard pruning: tokens are removed in training, the loss has no regulariser
    hard.train()
    batch = _qa_batch()
    start, end, out = hard(batch)
    terms = hard._losses(start, end, out, batch)
    assert set(terms) == {"qa_loss", "loss"}
    assert (out.final_keep.sum(1) < batch["attention_mask"].sum(1)).all()
    terms["loss"].backward()
    assert hard.strategy.thresholds.grad is None


def test_ltp_runs_on_qa(minilm_path):
    from skim.tasks.qa_module import QAModule

    module = QAModule(model=_tiny_model_cfg(minilm_path), skim={"name": "ltp", "temperature": 1e-2}).train()
    batch = _qa_batch()
    with torch.no_grad():
        module.strategy.thresholds.copy_(torch.tensor([0.0, 0.02, 0.025]))
    start, end, out = module(batch)
    terms = module._losses(start, end, out, batch)
    assert set(terms) == {"qa_loss", "skim_loss", "loss"}
    assert torch.equal(out.final_keep, batch["attention_mask"].bool())  # soft stage: nothing removed in training
    terms["loss"].backward()
    assert (module.strategy.thresholds.grad[1:] != 0).all()
    module.eval()
    with torch.no_grad():
        start, end, out = module(batch)
    prot = batch["protect_mask"].bool()
    pruned = batch["attention_mask"].bool() & ~out.final_keep
    assert pruned.any() and out.final_keep[prot].all()
    assert (start[pruned] == -100.0).all() and (start[out.final_keep] > -100.0).all()


@pytest.mark.parametrize("stage", ["soft", "hard"])
def test_ltp_runs_on_classification(minilm_path, stage):
    from skim.tasks.cls_module import ClassificationModule

    module = ClassificationModule(model=_tiny_model_cfg(minilm_path),
                                  skim={"name": "ltp", "stage": stage, "temperature": 1e-2},
                                  num_labels=2, is_regression=False, metric_names=["acc"]).train()
    ids, mask = ragged_batch(4, 50, vocab=1000, min_len=30)
    batch = {"input_ids": ids, "attention_mask": mask, "protect_mask": _protect(mask, 1),
             "labels": torch.tensor([0, 1, 1, 0])}
    with torch.no_grad():
        module.strategy.thresholds.copy_(torch.tensor([0.0, 0.02, 0.025]))
    logits, out = module(batch)
    terms = module._losses(logits, out, batch)
    assert ("skim_loss" in terms) == (stage == "soft")
    terms["loss"].backward()
    assert module.classifier.weight.grad is not None
    module.eval()
    with torch.no_grad():
        logits, out = module(batch)
    assert torch.isfinite(logits).all() and out.final_keep[:, 0].all()
    assert (out.kept_per_layer[-1] < mask.sum(1)).any()


# ---- FLOPs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(FLOPS_SHAPES))
@pytest.mark.parametrize("mode", ["mask", "prune"])
def test_analytic_flops_match_the_flop_counter(shape, mode):
    enc = flops_encoder(shape, build_strategy({"name": "ltp", "stage": "hard"}))
    L = 150
    ids = torch.randint(1, 200, (1, L))
    mask = torch.ones_like(ids)
    _calibrate(enc, ids, mask, q=0.4)
    out = assert_flops_match(enc, ids, mask, mode)
    # a model that really pruned, after layer 1 (fewer tokens enter layer 2) and after layer 2 (fewer survive)
    assert out.final_keep.sum() < out.kept_per_layer[2, 0] < L


# ---- configuration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option,value",
    [("stage", "medium"), ("temperature", 0.0), ("temperature", -1e-3), ("mask_coefficient", -0.1),
     ("final_threshold", -0.01), ("importance_norm", "max"), ("loss_denominator", "tokens")],
)
def test_bad_values_are_config_errors(option, value):
    with pytest.raises(ConfigError, match=option):
        build_strategy({"name": "ltp", option: value})


def test_bad_layers_type_or_attention_are_config_errors():
    with pytest.raises(ConfigError, match="skim_layers"):
        _encoder(layers=3, skim_layers=[1, 3])
    with pytest.raises(ConfigError, match="invalid option for skim=ltp"):
        build_strategy({"name": "ltp", "temperature": "warm"})
    with pytest.raises(ConfigError, match="unknown option"):
        build_strategy({"name": "ltp", "lambda": 0.1})
    with pytest.raises(ConfigError, match="attention probabilities"):
        LearnedTokenPruning.check_compatible("cls", "sdpa")
    LearnedTokenPruning.check_compatible("qa", "auto")


def test_threshold_init_is_the_codes_linear_schedule():
    enc = _encoder(layers=4, final_threshold=0.02)
    torch.testing.assert_close(enc.strategy.thresholds.detach(), torch.tensor([0.0, 0.005, 0.01, 0.015]))
    assert enc.strategy.skim_layers == [1, 2, 3]
    # validation reports the thresholds in use
    stats = enc.strategy.format_eval_stats(torch.ones(1))
    assert stats == pytest.approx({"threshold_layer1": 0.005, "threshold_layer2": 0.01, "threshold_layer3": 0.015})
