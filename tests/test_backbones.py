"""RoBERTa, DistilBERT and ALBERT (and ELECTRA) through the skim encoder's adapters, on tiny random-init configs of
each architecture (``AutoConfig.for_model``: no Hub, no files): the dense path is the HF model's own forward, mask ==
prune with real skimming decisions, Block-Skim's attention function and probability hook, ALBERT's per-application
skimming over shared weights, each architecture's classification head against HF's, FlopCounterMode agreement, and
fast dev runs of the ``tiny-*`` model configs with Block-Skim (QA) and Transkimmer (classification)."""

from __future__ import annotations

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from skim.encoders.skim_encoder import SkimEncoder
from skim.metrics.flops import EncoderShape
from skim.strategies import build_strategy
from skim.strategies.blockskim import ATTN_NAME as BLOCKSKIM_ATTN
from skim.strategies.transkimmer import ATTN_NAME as TRANSKIMMER_ATTN
from tests.conftest import ROOT, assert_flops_match, calibrate_blockskim_threshold, ragged_batch

VOCAB = 120
# random weights with a wide init: peaked attention, so that untrained predictors make real keep/drop decisions (at
# 0.02 a random ALBERT's projection to the hidden width leaves its attention uniform to 4 digits)
INIT = 0.5
SHAPE = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "vocab_size": VOCAB,
    "pad_token_id": 0,
    "initializer_range": INIT,
}
ARCHS = {
    # type_vocab_size 1 as roberta-base; 514 positions: RoBERTa numbers tokens from pad_token_id + 1
    "roberta": {**SHAPE, "num_hidden_layers": 3, "type_vocab_size": 1, "max_position_embeddings": 514},
    # DistilBERT's own names (its attribute_map aliases hidden_size etc., not the FFN width)
    "distilbert": {
        "dim": 32,
        "n_heads": 4,
        "hidden_dim": 64,
        "n_layers": 3,
        "vocab_size": VOCAB,
        "pad_token_id": 0,
        "initializer_range": INIT,
    },
    # 4 applications of 2 shared layer groups (group of application i: int(i / 2)), factorised embeddings
    "albert": {**SHAPE, "num_hidden_layers": 4, "num_hidden_groups": 2, "embedding_size": 16},
    "electra": {**SHAPE, "num_hidden_layers": 3, "embedding_size": 16},
}
NEW = ["roberta", "distilbert", "albert"]


def tiny(arch: str, attn: str = "eager", seed: int = 0, **overrides):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    config = AutoConfig.for_model(arch, **{**ARCHS[arch], **overrides})
    config._attn_implementation = attn
    kwargs = {"add_pooling_layer": False} if arch in ("roberta", "albert") else {}
    return AutoModel.from_config(config, attn_implementation=attn, **kwargs).eval()


def _segments(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BERT-style pair token types (1 on the second segment), as a WordPiece tokenizer gives every model here."""
    types = torch.zeros_like(ids)
    types[:, 15:] = 1
    return types * mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", [*NEW, "electra", "albert-inner"])
def test_dense_path_is_the_hf_forward(arch, attn):
    # albert-inner: two AlbertLayers per group application, each its own skim layer
    model = tiny("albert", attn, inner_group_num=2) if arch == "albert-inner" else tiny(arch, attn)
    enc = SkimEncoder(model, build_strategy({"name": "none"})).eval()
    ids, mask = ragged_batch(4, 60, vocab=VOCAB, min_len=20)
    types = _segments(ids, mask)
    with torch.no_grad():
        ours = {mode: enc(ids, mask, types, mode=mode) for mode in ("mask", "prune")}
        # the reference: each model's own forward, with the token types its tokenizer would give it (RoBERTa and
        # DistilBERT: none)
        hf_types = {"token_type_ids": types} if arch in ("albert", "electra", "albert-inner") else {}
        hf = model(input_ids=ids, attention_mask=mask, **hf_types).last_hidden_state
    real = mask.bool()
    assert enc.num_layers == (8 if arch == "albert-inner" else model.config.num_hidden_layers)
    for out in ours.values():
        torch.testing.assert_close(out.last_hidden_state[real], hf[real], atol=1e-5, rtol=1e-5)
        assert torch.equal(out.kept_per_layer, mask.sum(1).expand(enc.num_layers, -1))


def _skimming_encoder(arch: str, skim: str) -> SkimEncoder:
    """An encoder whose untrained predictors really keep some tokens and drop others."""
    if skim == "blockskim":
        # the blocks holding protected tokens always survive: the later layer cannot drop every block
        strategy = build_strategy({"name": "blockskim", "skim_layers": [0, 1], "protect_special": True})
        enc = SkimEncoder(tiny(arch, BLOCKSKIM_ATTN), strategy).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in enc.strategy.predictors.values():
                p.fc.weight.copy_(torch.randn(p.fc.weight.shape, generator=g) * 3.0)
        ids, mask = ragged_batch(8, 150, vocab=VOCAB, min_len=40, seed=2)
        calibrate_blockskim_threshold(enc, ids, mask)
        return enc
    enc = SkimEncoder(tiny(arch, TRANSKIMMER_ATTN), build_strategy({"name": "transkimmer"})).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in enc.strategy.predictors.values():
            p.net[-1].weight.copy_(torch.randn(p.net[-1].weight.shape, generator=g))
            p.net[-1].bias.copy_(torch.tensor([0.0, 1.0]))
    return enc


@pytest.mark.parametrize("skim", ["blockskim", "transkimmer"])
@pytest.mark.parametrize("arch", NEW)
def test_mask_and_prune_agree_on_kept_positions(arch, skim):
    enc = _skimming_encoder(arch, skim)
    ids, mask = ragged_batch(8, 150, vocab=VOCAB, min_len=40)
    types = _segments(ids, mask)
    protect = torch.zeros_like(mask)
    protect[:, :12] = 1
    with torch.no_grad():
        m = enc(ids, mask, types, mode="mask", protect_mask=protect)
        p = enc(ids, mask, types, mode="prune", protect_mask=protect)
    assert torch.equal(m.final_keep, p.final_keep)
    assert torch.equal(m.kept_per_layer, p.kept_per_layer)
    # meaningful only if something was skimmed and something kept
    assert (m.kept_per_layer[-1] < mask.sum(1)).any() and m.final_keep.any()
    keep, real = m.final_keep, mask.bool()
    # float32 sums over differently shaped (packed vs padded) inputs: one element of 16,576 once differed by 1.1e-5
    torch.testing.assert_close(m.last_hidden_state[keep], p.last_hidden_state[keep], atol=3e-5, rtol=1e-4)
    torch.testing.assert_close(m.last_hidden_state[real], p.last_hidden_state[real], atol=3e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", NEW)
def test_blockskim_attention_function_gives_the_eager_probabilities_blocks(arch):
    """Block-Skim's attention function gets ``skim_block_size`` through each architecture's layer call and the hook
    reads its blocks: they equal the diagonal blocks of HF's eager attention probabilities, and so do the decisions."""
    fused = _skimming_encoder(arch, "blockskim")
    strategy = build_strategy({"name": "blockskim", "skim_layers": [0, 1], "protect_special": True})
    eager = SkimEncoder(tiny(arch, "eager"), strategy).eval()
    eager.load_state_dict(fused.state_dict())
    eager.strategy.cfg.threshold = fused.strategy.cfg.threshold
    ids, mask = ragged_batch(8, 150, vocab=VOCAB, min_len=40, seed=3)
    with torch.no_grad():
        a = fused(ids, mask, mode="prune")
        b = eager(ids, mask, mode="prune")
    assert sorted(a.extras["block_logits"]) == [0, 1]
    for i in (0, 1):
        torch.testing.assert_close(a.extras["block_logits"][i][0], b.extras["block_logits"][i][0], atol=1e-4, rtol=1e-4)
    assert torch.equal(a.final_keep, b.final_keep)
    assert (a.kept_per_layer[-1] < mask.sum(1)).any()
    # the whole model: the outputs of the fused path equal the eager path's
    real = mask.bool()
    torch.testing.assert_close(a.last_hidden_state[real], b.last_hidden_state[real], atol=1e-4, rtol=1e-4)


def test_albert_skims_per_application_of_the_shared_layer():
    model = tiny("albert", BLOCKSKIM_ATTN, num_hidden_groups=1, num_hidden_layers=3)
    enc = SkimEncoder(model, build_strategy({"name": "blockskim", "protect_special": True})).eval()
    shared = enc.adapter.layer(0)
    assert all(enc.adapter.layer(i) is shared for i in range(3))
    # one predictor per application, one probability hook on the one attention module
    assert sorted(enc.strategy.predictors) == ["0", "1", "2"]
    assert len(shared.attention._forward_hooks) == 1
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in enc.strategy.predictors.values():
            p.fc.weight.copy_(torch.randn(p.fc.weight.shape, generator=g) * 3.0)
    ids, mask = ragged_batch(1, 160, vocab=VOCAB)
    calibrate_blockskim_threshold(enc, ids, mask)
    protect = torch.zeros_like(mask)
    protect[:, :12] = 1
    widths = []
    hook = shared.register_forward_pre_hook(lambda mod, args: widths.append(args[0].shape[1]))
    with torch.no_grad():
        out = enc(ids, mask, mode="prune", protect_mask=protect)
    hook.remove()
    # the same weights ran three times, each on the tokens its own application kept
    assert widths == out.kept_per_layer[:, 0].tolist()
    assert widths[0] == 160 and widths[-1] < 160
    assert EncoderShape.of(model.config).layers == 3


def _head_pair(arch: str):
    """Our ClassificationModule and HF's *ForSequenceClassification with the same weights."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from skim.tasks.cls_module import ClassificationModule

    torch.manual_seed(0)
    config = AutoConfig.for_model(arch, **ARCHS[arch], num_labels=3)
    hf = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    ours = ClassificationModule(
        model={
            "model_type": arch,
            "random_init": True,
            "config_overrides": ARCHS[arch],
            "attn_implementation": "eager",
        },
        num_labels=3,
        is_regression=False,
        metric_names=["acc"],
    ).eval()
    state = getattr(hf, arch).state_dict()
    ours.encoder.backbone.load_state_dict(state)  # strict: the backbone has a pooler iff HF's head uses one
    if arch == "roberta":
        head = {"pre_classifier": hf.classifier.dense, "classifier": hf.classifier.out_proj}
    elif arch == "distilbert":
        head = {"pre_classifier": hf.pre_classifier, "classifier": hf.classifier}
    else:
        head = {"classifier": hf.classifier}
    for name, module in head.items():
        getattr(ours, name).load_state_dict(module.state_dict())
    assert (ours.pre_classifier is None) == (arch == "albert")
    return ours, hf


@pytest.mark.parametrize("arch", NEW)
def test_classification_head_is_the_architectures_own(arch):
    ours, hf = _head_pair(arch)
    ids, mask = ragged_batch(4, 40, vocab=VOCAB)
    types = _segments(ids, mask)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    with torch.no_grad():
        logits, _ = ours(batch, mode="prune")
        expected = hf(
            input_ids=ids, attention_mask=mask, **({"token_type_ids": types} if arch == "albert" else {})
        ).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # and the head's dropout rate is the one HF's head uses (seq_classif_dropout, classifier_dropout_prob, ...)
    assert ours.dropout.p == pytest.approx(hf.dropout.p if arch != "roberta" else hf.classifier.dropout.p)


def _strategies() -> dict[str, type]:
    from skim.strategies import registered

    return registered()


# every registered strategy with its defaults, except: the baselines at half the tokens (they keep everything at
# keep_ratio 1.0), and PoWER-BERT in both stages (the soft stage learns the retention and removes nothing)
VARIANTS = {name: {"name": name} for name in _strategies()}
VARIANTS.update(
    random={"name": "random", "keep_ratio": 0.5},
    truncate={"name": "truncate", "keep_ratio": 0.5},
    power={"name": "power", "stage": "hard", "retention": [1.0, 0.6, 0.4]},
    power_soft={"name": "power", "stage": "soft", "max_seq_length": 48},
)
SKIMMING = {"random", "truncate", "power"}  # variants that must have removed tokens in the pruned forward
MODULE_GRID = [
    (a, v, t)
    for a in NEW
    for v, o in sorted(VARIANTS.items())
    for t in ("qa", "cls")
    if t in _strategies()[o["name"]].supported_tasks
]


@pytest.mark.parametrize("arch,variant,task", MODULE_GRID)
def test_every_strategy_trains_and_prunes_on_every_backbone(arch, variant, task):
    """The task modules as train.py builds them (attention implementation resolved from the strategy), one training
    step's losses and gradients in the training mode and a pruned evaluation forward, without Lightning's loop."""
    from skim.tasks.cls_module import ClassificationModule
    from skim.tasks.qa_module import QAModule

    model = {"model_type": arch, "random_init": True, "config_overrides": ARCHS[arch]}
    options = VARIANTS[variant]
    torch.manual_seed(0)
    if task == "qa":
        module = QAModule(model=model, skim=options)
    else:
        module = ClassificationModule(
            model=model, skim=options, num_labels=2, is_regression=False, metric_names=["acc"]
        )
    ids, mask = ragged_batch(4, 48, vocab=VOCAB, min_len=30)
    protect = torch.zeros_like(mask)
    protect[:, :8] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": _segments(ids, mask), "protect_mask": protect}
    if task == "qa":
        batch.update(start_positions=torch.tensor([10, 12, 20, 25]), end_positions=torch.tensor([11, 14, 21, 28]))
    else:
        batch["labels"] = torch.tensor([0, 1, 1, 0])
    module.train()
    outputs = module(batch)
    terms = module._losses(*outputs, batch)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    grads = [p.grad for p in module.encoder.backbone.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    module.eval()
    with torch.no_grad():
        out = module(batch, mode="prune")[-1]
    assert out.kept_per_layer.shape == (module.encoder.num_layers, 4)
    if variant in SKIMMING:
        assert (out.kept_per_layer[-1] < mask.sum(1)).all()  # it really skimmed on this backbone


# FLOPs shapes where a missing term would show: embedding width 128 > hidden 64 and short inputs, so ALBERT's
# projection to the hidden width is ~7 % of the total (the cross-check's tolerance is 2 %)
FLOPS = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "num_hidden_layers": 3}
FLOPS_ARCHS = {
    "roberta": {**FLOPS, "type_vocab_size": 1, "max_position_embeddings": 514},
    "distilbert": {"dim": 64, "n_heads": 4, "hidden_dim": 128, "n_layers": 3},
    "albert": {**FLOPS, "embedding_size": 128},
}


@pytest.mark.parametrize("skim,mode", [("none", "prune"), ("blockskim", "mask"), ("blockskim", "prune"), ("transkimmer", "prune")])
@pytest.mark.parametrize("arch", NEW)
def test_analytic_flops_match_the_flop_counter(arch, skim, mode):
    from transformers import AutoConfig, AutoModel

    attn = {"none": "sdpa", "blockskim": "eager", "transkimmer": TRANSKIMMER_ATTN}[skim]
    torch.manual_seed(0)
    config = AutoConfig.for_model(arch, vocab_size=200, pad_token_id=0, **FLOPS_ARCHS[arch])
    config._attn_implementation = attn
    strategy = build_strategy({"name": skim, **({"block_size": 8} if skim == "blockskim" else {})})
    enc = SkimEncoder(AutoModel.from_config(config, attn_implementation=attn), strategy).eval()
    if skim == "transkimmer":
        with torch.no_grad():
            for p in strategy.predictors.values():
                p.net[-1].weight.normal_(0, 1.0)
                p.net[-1].bias.copy_(torch.tensor([0.0, 0.5]))
    L = 48
    ids = torch.randint(1, 200, (1, L))
    if skim == "blockskim":  # untrained predictors keep every block: a threshold that drops about half of them
        with torch.no_grad():
            for p in strategy.predictors.values():
                p.fc.weight.normal_(0, 3.0)
        calibrate_blockskim_threshold(enc, torch.randint(1, 200, (4, L)), torch.ones(4, L, dtype=torch.long))
    out = assert_flops_match(enc, ids, torch.ones_like(ids), mode)
    assert EncoderShape.of(config) == EncoderShape(64, 128, 3, 4, 128 if arch == "albert" else 0)
    if mode == "prune" and skim != "none":
        assert out.kept_per_layer[-1, 0] < L  # the check covered a model that really skimmed


@pytest.fixture
def _clear_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


SKIM_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "skim").glob("*.yaml"))


@pytest.mark.parametrize("task", ["qa", "cls"])
@pytest.mark.parametrize("model", ["tiny", "tiny-roberta", "tiny-distilbert", "tiny-albert"])
def test_every_strategy_fast_dev_runs_on_every_backbone(model, task, tmp_run_root, _clear_hydra):
    """Every skim config x every backbone x both tasks, composed and run through Lightning's fast_dev_run with the
    config's own trainer, callbacks and loggers (skim.train's path without the run record); the data module is
    built once per backbone and task, since its features are the same for every strategy."""
    from hydra.utils import instantiate

    from skim.strategies import strategy_class
    from skim.tasks.base_module import validate_config
    from skim.utils.run import instantiate_group
    from tests.helpers.runs import FAST_DEV, compose_cfg

    experiment = "quickstart" if task == "qa" else "quickstart_cls"
    datamodule, ran = None, []
    for skim in SKIM_CONFIGS:
        GlobalHydra.instance().clear()
        cfg = compose_cfg([f"experiment={experiment}", f"model={model}", f"skim={skim}", *FAST_DEV],
                          output_dir=tmp_run_root / skim)  # fmt: skip
        if task not in strategy_class(cfg.skim.name).supported_tasks:
            continue
        validate_config(cfg)
        datamodule = datamodule or instantiate(cfg.data)
        module = instantiate(cfg.module, output_dir=str(tmp_run_root / skim))
        loggers = instantiate_group(cfg, "logger")
        trainer = instantiate(cfg.trainer, callbacks=instantiate_group(cfg, "callbacks"), logger=loggers or False)
        trainer.fit(module, datamodule=datamodule)
        metrics = trainer.callback_metrics
        assert trainer.fast_dev_run and cfg.data.monitor in metrics, skim
        assert metrics["val/flops/skim_gflops"] > 0 and "val/skim/kept_layer1" in metrics, skim
        ran.append(skim)
    qa_only = [s for s in SKIM_CONFIGS if s.startswith("blockskim")]  # Block-Skim (every preset) is QA only
    assert len(ran) == len(SKIM_CONFIGS) - (len(qa_only) if task == "cls" else 0)


def test_a_bf16_checkpoint_loads_as_float32_weights(tmp_path):
    """Checkpoints saved in bf16 (many Hub models; the GPU carry's MiniLM) must not become bf16 parameters: AdamW on
    bf16 weights drops small updates. Lightning's precision setting decides the compute dtype, not the file."""
    from skim.tasks.backbone import build_backbone

    tiny("roberta").to(torch.bfloat16).save_pretrained(tmp_path)
    for random_init in (False, True):  # a random model of the checkpoint's shape takes its config's dtype too
        options = {"pretrained_name_or_path": str(tmp_path), "random_init": random_init}
        model = build_backbone(options, attn_implementation="sdpa", add_pooling_layer=False)
        assert {p.dtype for p in model.parameters()} == {torch.float32}, random_init
