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
# # 03 · Results: accuracy against speed-up
#
# Every finished `skim.train` / `skim.eval` job writes a record (`<run>/metrics.json`, and one line of
# `logs/results.jsonl`). This notebook reads them and draws, per dataset, the results table, the accuracy-vs-analytic
# speed-up Pareto plot and the kept-token ratio entering each layer, per strategy, with the functions behind
# `python -m skim.report`.
#
# By default it reads the records committed under `results/` (the reduced-scale CPU runs of the README: MiniLM-L6 on
# SQuAD v1.1, SST-2 and IMDB); set `SOURCE = "logs"` to read your own `logs/results.jsonl` instead.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from skim.report import kept_layers, load_rows, markdown_table, pareto_figure, point_label
from skim.utils.resolvers import skim_root

ROOT = Path(skim_root())
SOURCE = "results"  # or "logs"

if SOURCE == "logs":
    rows = load_rows(ROOT / "logs" / "results.jsonl")
else:
    rows = [json.loads(p.read_text()) for p in sorted((ROOT / "results").glob("**/metrics.json"))]
# evaluations in mask mode report a "speed-up" that no pruned run realises (README, SST-2): keep them off the plots
rows = [r for r in rows if "skim.eval_mode=mask" not in r.get("overrides", [])]
print(len(rows), "records:", sorted({(r["data"], r["skim"]) for r in rows}))

# %% [markdown]
# ## Tables
# `forced` is the truncation baseline's name in records written before it was renamed `truncate`.

# %%
by_data: dict[str, list[dict]] = {}
for r in rows:
    by_data.setdefault(r["data"], []).append(r)
for data, group in by_data.items():
    display(Markdown(f"### {data}\n\n" + markdown_table(group)))

# %% [markdown]
# ## Accuracy vs analytic speed-up
# Analytic FLOPs of the skimming model against the dense model on the same examples (padding excluded); the dashed
# line is the Pareto front.

# %%
for data, group in by_data.items():
    accuracy = "val/f1" if any("val/f1" in r["metrics"] for r in group) else "val/acc"
    fig = pareto_figure(group, accuracy)
    fig.axes[0].set_title(data)
    display(fig)
    plt.close(fig)


# %% [markdown]
# ## Kept-token ratio per layer, per strategy
# Tokens entering each layer / real tokens: dense stays at 1; a skimming run falls with depth.


# %%
def label(r: dict) -> str:
    return " ".join(x for x in (r.get("task_name") or "", point_label(r)) if x)


for data, group in by_data.items():
    strategies = sorted({r["skim"] for r in group})
    fig, axes = plt.subplots(1, len(strategies), figsize=(3.2 * len(strategies), 2.8), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], strategies):
        for r in (r for r in group if r["skim"] == name):
            ratios = kept_layers(r["metrics"])
            ax.plot(range(len(ratios)), ratios, marker=".", label=label(r))
        ax.set_title(f"{data}: {name}", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5)
    axes[0][0].set_ylabel("kept ratio")
    fig.tight_layout()
    display(fig)
    plt.close(fig)
