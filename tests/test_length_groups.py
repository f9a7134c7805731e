"""Prune mode's length groups: each layer run on groups of examples of similar length gives the same outputs and the
same keep decisions as the whole padded batch, for every kind of strategy, and really runs in groups."""

from __future__ import annotations

import pytest
import torch

from skim.encoders.skim_encoder import SkimEncoder
from skim.errors import ConfigError
from skim.strategies import build_strategy
from skim.strategies.blockskim import ATTN_NAME as BLOCKSKIM_ATTN
from skim.strategies.transkimmer import ATTN_NAME as TRANSKIMMER_ATTN
from tests.conftest import calibrate_blockskim_threshold, ragged_batch, tiny_bert

STRATEGIES = {
    "none": ({"name": "none"}, "sdpa"),
    "blockskim": ({"name": "blockskim", "block_size": 8}, BLOCKSKIM_ATTN),
    "transkimmer": ({"name": "transkimmer"}, TRANSKIMMER_ATTN),
    "truncate": ({"name": "truncate", "schedule": [1.0, 0.6, 0.3]}, "sdpa"),
    "power": ({"name": "power", "stage": "hard", "retention": [1.0, 0.6, 0.4]}, "eager"),
}


def _encoder(name: str, ids, mask) -> SkimEncoder:
    options, attn = STRATEGIES[name]
    enc = SkimEncoder(tiny_bert(attn, layers=3, hidden=32, heads=4), build_strategy(options)).eval()
    torch.manual_seed(1)
    if name == "transkimmer":  # untrained predictors keep everything: weights that make them skim
        with torch.no_grad():
            for p in enc.strategy.predictors.values():
                p.net[-1].weight.normal_(0, 1.0)
                p.net[-1].bias.copy_(torch.tensor([0.0, 0.5]))
    if name == "blockskim":
        with torch.no_grad():
            for p in enc.strategy.predictors.values():
                p.fc.weight.normal_(0, 3.0)
        calibrate_blockskim_threshold(enc, ids, mask)
    return enc


@pytest.mark.parametrize("batch_size,length", [(8, 96), (16, 160)])  # the second takes Block-Skim's fused path
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_groups_give_the_batch_result(name, batch_size, length):
    ids, mask = ragged_batch(batch_size, length, min_len=12)
    enc = _encoder(name, ids, mask)
    calls: list[int] = []
    run_layer = enc.adapter.run_layer
    enc.adapter.run_layer = lambda i, hidden, *a, **k: calls.append(hidden.shape[0]) or run_layer(i, hidden, *a, **k)
    with torch.no_grad():
        whole = enc(ids, mask, mode="prune")
        whole_calls, calls[:] = list(calls), []
        enc.length_groups = True
        grouped = enc(ids, mask, mode="prune")
    assert whole_calls == [batch_size] * enc.num_layers
    assert len(calls) > enc.num_layers and min(calls) < batch_size  # some layers really ran in groups
    torch.testing.assert_close(grouped.kept_per_layer, whole.kept_per_layer, atol=0, rtol=0)
    torch.testing.assert_close(grouped.final_keep, whole.final_keep, atol=0, rtol=0)
    keep = whole.final_keep[..., None]
    torch.testing.assert_close(grouped.last_hidden_state * keep, whole.last_hidden_state * keep, atol=2e-5, rtol=1e-4)
    if name == "blockskim":
        for i, (logits, pos, valid) in whole.extras["block_logits"].items():
            g_logits, g_pos, g_valid = grouped.extras["block_logits"][i]
            assert torch.equal(g_valid, valid) and torch.equal(g_pos, pos)
            torch.testing.assert_close(g_logits, logits, atol=1e-4, rtol=1e-4)
    assert (whole.kept_per_layer[-1] < mask.sum(1)).any() or name == "none"  # the check covered real skimming


def test_no_groups_where_they_would_not_pay_or_cannot_apply():
    ids, mask = ragged_batch(8, 96, min_len=12)
    enc = _encoder("none", ids, mask)
    enc.length_groups = True
    calls: list[int] = []
    run_layer = enc.adapter.run_layer
    enc.adapter.run_layer = lambda i, hidden, *a, **k: calls.append(hidden.shape[0]) or run_layer(i, hidden, *a, **k)
    with torch.no_grad():
        enc(ids, torch.ones_like(mask), mode="prune")  # equal lengths: nothing to gain
        enc(ids, mask, mode="mask")  # mask mode keeps full length by definition
    enc(ids, mask, mode="prune")  # gradients on: training keeps the batch whole
    assert calls == [8] * (3 * enc.num_layers)


def test_a_validation_in_groups_scores_as_the_whole_batch(tmp_run_root, monkeypatch):
    """Lightning's validation (prune mode, no gradients) through the real entry point, with and without groups. The
    quickstart's few short examples would not pay for groups: the policy is set to group any length difference."""
    from hydra.core.global_hydra import GlobalHydra

    from skim.encoders import skim_encoder
    from skim.train import train
    from skim.utils.run import task_wrapper
    from tests.helpers.runs import FAST_DEV, compose_cfg

    monkeypatch.setattr(skim_encoder, "GROUP_RATIO", 1.0)
    monkeypatch.setattr(skim_encoder, "GROUP_GAIN", 1.0)
    grouped: list[int] = []
    length_groups = SkimEncoder._length_groups

    def counting(self, state, kwargs):
        groups = length_groups(self, state, kwargs)
        grouped.append(len(groups) if groups else 0)
        return groups

    monkeypatch.setattr(SkimEncoder, "_length_groups", counting)
    metrics = []
    for groups in ("false", "true"):
        GlobalHydra.instance().clear()
        cfg = compose_cfg(["experiment=quickstart", "skim=blockskim_fixed", "skim.threshold=0.5", *FAST_DEV,
                           f"model.length_groups={groups}"], output_dir=tmp_run_root / groups)  # fmt: skip
        metrics.append(task_wrapper(train)(cfg))
    GlobalHydra.instance().clear()
    assert max(grouped) > 1  # the second run's validation really ran layers in groups
    assert metrics[0].keys() == metrics[1].keys() and "val/skim/kept_layer1" in metrics[0]
    for key, value in metrics[0].items():
        assert metrics[1][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_the_model_config_turns_them_on():
    from skim.tasks.qa_module import QAModule

    model = {"model_type": "bert", "random_init": True, "config_overrides": {"hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 120}}  # fmt: skip
    assert QAModule(model=model, skim={"name": "none"}).encoder.length_groups is False
    assert QAModule(model={**model, "length_groups": True}, skim={"name": "none"}).encoder.length_groups is True
    with pytest.raises(ConfigError, match="model.length_groups must be true or false, got 'yes'"):
        QAModule(model={**model, "length_groups": "yes"}, skim={"name": "none"})


def test_groups_keep_block_logits_with_their_examples_when_every_block_is_live():
    """Groups run longest first: when every block of the batch holds a live token, their logits must still go back to
    their own examples (the stacked blocks are in group order, not batch order)."""
    enc = SkimEncoder(tiny_bert(BLOCKSKIM_ATTN, layers=3, hidden=32, heads=4), build_strategy({"name": "blockskim", "threshold": 0.0})).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in enc.strategy.predictors.values():
            p.fc.weight.normal_(0, 3.0)
    lengths = torch.tensor([70, 96, 69, 68])  # 3 blocks each, all live: no dead block to fill in
    ids = torch.randint(1, 120, (4, 96), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(96)[None] < lengths[:, None]).long()
    with torch.no_grad():
        whole = enc(ids * mask, mask, mode="prune")
        enc.length_groups = True
        grouped = enc(ids * mask, mask, mode="prune")
    for i, (logits, _, _) in whole.extras["block_logits"].items():
        torch.testing.assert_close(grouped.extras["block_logits"][i][0], logits, atol=1e-4, rtol=1e-4)
