"""The README's "Add a strategy" example (``examples/keep_every_other.py`` + ``examples/conf/skim/``) registers itself,
makes the same decisions in mask and prune mode, and trains through the real entry point with its YAML.

It is imported from ``examples/`` for these tests only and unregistered afterwards, so the package's strategies (and
every other test's list of them) stay the built-in ones."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from skim.errors import ConfigError
from tests.conftest import ROOT, ragged_batch, tiny_bert

EXAMPLE = ROOT / "examples" / "keep_every_other.py"
EXAMPLE_CONF = ROOT / "examples" / "conf"


@pytest.fixture(scope="module")
def example():
    from skim.strategies import registered
    from skim.strategies.base import _REGISTRY
    from skim.utils.config_store import register_configs

    assert "keep_every_other" not in registered()  # not part of the package
    spec = importlib.util.spec_from_file_location("keep_every_other", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # @register runs here
    register_configs()  # its schema, for conf/skim/keep_every_other.yaml
    yield module
    _REGISTRY.pop("keep_every_other", None)
    sys.modules.pop(spec.name, None)


def test_the_readme_shows_the_tested_files():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Add a strategy", 1)[1].split("\n## ", 1)[0]
    assert f"```python\n{EXAMPLE.read_text()}```" in section
    assert f"```yaml\n{(EXAMPLE_CONF / 'skim' / 'keep_every_other.yaml').read_text()}```" in section


def test_every_second_unprotected_token_leaves_and_mask_equals_prune(example):
    from skim.encoders.skim_encoder import SkimEncoder
    from skim.strategies import build_strategy, registered

    assert registered()["keep_every_other"] is example.KeepEveryOther
    ids, mask = ragged_batch(6, 50, min_len=12)
    protect = torch.zeros_like(mask)
    protect[:, :5] = 1
    outs = {}
    with torch.no_grad():
        for mode in ("mask", "prune"):
            enc = SkimEncoder(tiny_bert(attn="sdpa", layers=3), build_strategy({"name": "keep_every_other", "after": 1}))
            outs[mode] = enc.eval()(ids, mask, mode=mode, protect_mask=protect)
    m, p = outs["mask"], outs["prune"]
    real = mask.sum(1)
    assert torch.equal(p.kept_per_layer[:2], torch.stack([real, real]))  # layers 0 and 1 see every token
    assert p.kept_per_layer[2].tolist() == [5 + math.ceil((int(n) - 5) / 2) for n in real]
    assert p.final_keep[:, :5].all() and p.final_keep[:, 5::2][mask[:, 5::2].bool()].all()
    assert not p.final_keep[:, 6::2].any()
    assert torch.equal(m.final_keep, p.final_keep) and torch.equal(m.kept_per_layer, p.kept_per_layer)
    kept = p.final_keep
    torch.testing.assert_close(p.last_hidden_state[kept], m.last_hidden_state[kept], atol=1e-5, rtol=1e-4)


def test_a_layer_the_model_lacks_is_refused(example):
    from skim.encoders.skim_encoder import SkimEncoder
    from skim.strategies import build_strategy

    with pytest.raises(ConfigError, match=r"skim.after=3: the model has layers 0..2"):
        SkimEncoder(tiny_bert(layers=3), build_strategy({"name": "keep_every_other", "after": 3}))


def test_fast_dev_run_with_its_yaml(example, tmp_run_root):
    from skim.train import train
    from skim.utils.run import task_wrapper
    from tests.helpers.runs import FAST_DEV, compose_cfg

    GlobalHydra.instance().clear()
    try:
        cfg = compose_cfg(
            ["experiment=quickstart", "skim=keep_every_other", "skim.after=0", f"hydra.searchpath=[file://{EXAMPLE_CONF}]",
             *FAST_DEV],
            output_dir=tmp_run_root / "run",
        )
        metrics = task_wrapper(train)(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.skim.name == "keep_every_other" and cfg.data.monitor in metrics
    # the 2-layer quickstart model: layer 1 runs on the protected tokens and half of the others
    assert metrics["val/skim/kept_layer0"] == 1.0 and metrics["val/skim/kept_layer1"] < 0.75
