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
# # 02 · What was skimmed?
#
# Which tokens did each layer drop, on real SQuAD v1.1 dev questions? This notebook loads a checkpoint, runs a few
# dev examples from `../shared/data` through it in prune mode (skimmed tokens physically removed) and draws, with
# `skim.visualize`, every token shaded by the number of layers it ran through, the gold answer (underlined) and the
# prediction (boxed), the tokens entering each layer and, for Block-Skim, each 32-token block's P(keep) per layer.
#
# **Checkpoint.** Set `CKPT` (or the `SKIM_CKPT` environment variable) to any skim run's
# `checkpoints/last.ckpt`, e.g. a MiniLM Block-Skim run on SQuAD. By default it takes the Block-Skim checkpoint that
# notebook 01 trained: a tiny model trained for seconds on *generated* questions. It shares MiniLM's tokenizer, so it
# reads SQuAD text, but its answers are not meant to be right; what the notebook shows is the mechanics.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from IPython.display import HTML, display

import skim  # noqa: F401  (registers skim's config resolvers)
from skim.tasks.checkpoint import load_task_module
from skim.utils.config_store import register_configs
from skim.utils.resolvers import skim_root
from skim.visualize import collect_views, figure, load_records, render_html

os.environ.setdefault("HF_HUB_OFFLINE", "1")
register_configs()
ROOT = Path(os.environ.get("SKIM_ROOT") or skim_root())
CKPT = Path(os.environ.get("SKIM_CKPT") or ROOT / "logs" / "notebooks" / "01_quickstart" / "blockskim" / "checkpoints" / "last.ckpt")
if not CKPT.is_file():
    raise FileNotFoundError(f"{CKPT}: run notebook 01 first, or set SKIM_CKPT to a skim checkpoint")
# indices into SQuAD v1.1 dev (or ids, e.g. "56be4db0acb8001400a502ec")
EXAMPLES = [0, 1]
print(CKPT)

# %% [markdown]
# ## Model and data
# The `visualize` config is the one behind `python -m skim.visualize`; `data=squad_local` reads
# `../shared/data/squad_v1.1/dev-v1.1.json.gz` (or `$SKIM_SHARED_DATA`). The model's shape comes from the
# checkpoint; `model=tiny` only names the tokenizer and attention settings. With `use_checkpoint_skim=true` the
# strategy runs exactly as trained; otherwise the `skim` overrides below choose how it skims.


# %%
def load(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(skim_root()) / "conf"), version_base="1.3"):
        cfg = compose(config_name="visualize", overrides=["model=tiny", "data=squad_local", f"ckpt_path={CKPT}", *overrides])
    return load_task_module(cfg), instantiate(cfg.data)


module, data = load(["use_checkpoint_skim=true"])
records = load_records(data, EXAMPLES)
print(module.strategy.name, "threshold", getattr(module.strategy.cfg, "threshold", None))
print(records[0][1]["question"])

# %% [markdown]
# ## As trained

# %%
views = collect_views(module, data, records)
display(HTML(render_html(views, title=f"{CKPT.parent.parent.name}: as trained", standalone=False)))

# %% [markdown]
# ## A stricter threshold
# Block-Skim drops a block when its P(keep) is below `skim.threshold`. Raising it shows which blocks the predictor
# ranks lowest (for another strategy, pass its own options, e.g. `skim.keep_ratio`).

# %%
if module.strategy.name == "blockskim":
    strict, _ = load(["skim=blockskim_fixed", "skim.threshold=0.75"])
    for view in collect_views(strict, data, records):
        fig = figure(view)
        display(fig)
        plt.close(fig)
