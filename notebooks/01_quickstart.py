# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Quickstart: dense vs Block-Skim on synthetic QA
#
# This notebook does what `make demo` does, in-process: it composes skim's Hydra config with the compose API,
# trains a tiny randomly initialised BERT on skim's generated extractive-QA set (one fact sentence hidden among
# filler sentences) once densely and once with Block-Skim, and compares EM/F1, the analytic FLOPs speed-up and
# the kept-token ratio entering each layer.
#
# **Scale.** By default it trains a 64-wide, 2-layer model on 200 generated questions for one epoch (well under a
# minute on 2 CPU cores): enough to check the pipeline end to end, not to learn the task. Set `FULL = True` for the quickstart's own
# scale (3,000 questions, 2 epochs; about 4½ minutes), where dense reaches useful EM/F1.
# Runs land in `logs/notebooks/01_quickstart/` (or under `$SKIM_ROOT`); notebook 02 reads the Block-Skim checkpoint
# from there.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import skim  # noqa: F401  (registers skim's config resolvers)
from skim.report import kept_layers
from skim.train import train
from skim.utils.config_store import register_configs
from skim.utils.resolvers import skim_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
register_configs()
CONF = Path(skim_root()) / "conf"
FULL = False

# %% [markdown]
# ## Compose the configs
# `experiment=quickstart` selects `data=synthetic model=tiny trainer=cpu` (see `conf/experiment/quickstart.yaml`);
# Block-Skim adds `skim=blockskim_fixed skim.threshold=0.5` (one answer token makes a positive block: the generated
# answers are one or two words). `paths.output_dir` replaces the run directory that `python -m skim.train` would
# get from Hydra.

# %%
ROOT = Path(os.environ.get("SKIM_ROOT") or skim_root())
OUT = ROOT / "logs" / "notebooks" / "01_quickstart"
# the small setting: fewer questions, one epoch, a narrower model (64 wide instead of 128)
SMALL = [] if FULL else [
    "data.synthetic.train_size=200", "data.synthetic.val_size=40", "trainer.max_epochs=1",
    "model.config_overrides.hidden_size=64", "model.config_overrides.intermediate_size=256",
]
RUNS = {
    "dense": ["experiment=quickstart"],
    "blockskim": ["experiment=quickstart", "skim=blockskim_fixed", "skim.threshold=0.5"],
}


def compose_run(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[*overrides, *SMALL, f"paths.output_dir={OUT / name}", "callbacks.progress_bar.interval_s=600"],
        )


cfgs = {name: compose_run(name, overrides) for name, overrides in RUNS.items()}
print(cfgs["blockskim"].skim)

# %% [markdown]
# ## Train both models
# `train` is the function behind `python -m skim.train`: it fits, validates with the skim strategy in prune mode
# (skimmed tokens physically removed) and returns the validation metrics.

# %%
metrics = {name: train(cfg) for name, cfg in cfgs.items()}

# %% [markdown]
# ## Compare

# %%
rows = []
for name, m in metrics.items():
    rows.append({
        "model": name,
        "EM": m["val/em"],
        "F1": m["val/f1"],
        "FLOPs speed-up": m["val/flops/speedup"],
        **{f"kept layer {i}": r for i, r in enumerate(kept_layers(m))},
    })
table = pd.DataFrame(rows).set_index("model")
table.round(3)

# %%
fig, ax = plt.subplots(figsize=(5, 3))
for name, m in metrics.items():
    ratios = kept_layers(m)
    ax.plot(range(len(ratios)), ratios, marker="o", label=name)
ax.set_xlabel("layer")
ax.set_ylabel("kept-token ratio entering the layer")
ax.set_ylim(0, 1.05)
ax.set_xticks(range(len(ratios)))
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# The Block-Skim checkpoint that notebook 02 visualises:

# %%
CKPT = OUT / "blockskim" / "checkpoints" / "last.ckpt"
assert CKPT.is_file()
print(CKPT)
