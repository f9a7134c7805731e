"""``python -m skim.keep_pressure``: which way the gradients push a straight-through skim predictor, layer by layer.

A Transkimmer predictor learns from two forces on each token's keep decision m (one straight-through Gumbel sample per
layer): the skim loss pulls m down (``d skim_loss / d m`` > 0) and the task loss pushes it up wherever keeping the token
lowers the task loss (``-d task_loss / d m`` > 0). Both reach the predictor's logits through the same soft-sample
factor, so their ratio per token says which way the predictor moves; their means say which way the shared bias moves.
For ``n_batches`` training batches of ``data`` this writes ``keep_pressure.json`` / ``.md`` with, per layer, over the
real tokens alive before that layer's decision ([CLS] excluded):

* ``task_keep``: mean of ``-d task / d m`` (positive: the task wants tokens kept), ``task_abs``: its mean magnitude;
* ``skim_pull``: mean of ``d skim / d m``;
* ``net_keep`` = ``task_keep - skim_pull`` (positive: the mean token is pushed towards keep, the predictor cannot start
  to skim) and ``share_task_wins``: tokens whose own task push exceeds their skim pull.

For extractive QA the same figures follow over two groups of gold-answer tokens (in the features that hold their
answer): ``answer_*`` over every token of the span, ``answer_ends_*`` over its first and last tokens, the two the span
loss scores (``*_tokens``, ``*_task_keep``, ``*_skim_pull``, ``*_share_task_wins``). They say whether the answers are
defended while the mean token is pulled towards skip: the predictor is one MLP for every token, so what moves the
mean moves the answers too, unless it can tell them apart.

The model is the run's starting point: ``model.init_checkpoint`` (dense weights, fresh predictors) or a trained
``ckpt_path``. Gradients are those of one training step, dropout and Gumbel noise included (seeded).
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

import skim  # noqa: F401
from skim.errors import ConfigError
from skim.metrics.answers import answer_mask
from skim.tasks.base_module import validate_config
from skim.tasks.checkpoint import run_module
from skim.utils.config_store import register_configs
from skim.utils.run import git_commit, hydra_overrides, run_cli, task_wrapper, write_report

register_configs()

COLUMNS = ("tokens", "task_keep", "task_abs", "skim_pull", "net_keep", "share_task_wins")
GROUP_COLUMNS = ("tokens", "task_keep", "skim_pull", "share_task_wins")
ANSWER_GROUPS = ("answer", "answer_ends")


def _sums(push: torch.Tensor, pull: torch.Tensor) -> torch.Tensor:
    """[count, push, |push|, pull, tokens whose push exceeds their pull] over the selected tokens."""
    return torch.stack([torch.tensor(float(push.numel())), push.sum(), push.abs().sum(), pull.sum(), (push > pull).sum()]).detach().double()


def _means(sums: torch.Tensor) -> dict[str, float]:
    n, push, push_abs, pull, wins = sums.tolist()
    tokens, n = int(n), max(n, 1.0)
    return {"tokens": tokens, "task_keep": push / n, "task_abs": push_abs / n, "skim_pull": pull / n,
            "net_keep": (push - pull) / n, "share_task_wins": wins / n}  # fmt: skip


def keep_pressure(module, batches) -> list[dict[str, float]]:
    """Per skim layer: the mean task push towards keep and skim-loss pull towards skip on the keep decisions."""
    module.train()
    sums: dict[tuple[str, int], torch.Tensor] = {}  # (group, layer); "" is every token
    for batch in batches:
        outputs = module(batch)
        terms = module._losses(*outputs, batch)
        out = outputs[-1]
        decisions = out.extras.get("tk_decisions")
        if not decisions or "skim_loss" not in terms:
            raise ConfigError("skim.keep_pressure needs a strategy with straight-through keep decisions and a skim loss (skim=transkimmer)")
        task = sum(v for k, v in terms.items() if k not in ("loss", "skim_loss"))
        layers = sorted(decisions)
        ms = [decisions[i] for i in layers]
        g_task = torch.autograd.grad(task, ms, retain_graph=True, allow_unused=True)
        g_skim = torch.autograd.grad(terms["skim_loss"], ms, allow_unused=True)
        alive = out.extras["tk_masks"]
        groups = {"": torch.ones_like(batch["attention_mask"], dtype=torch.bool)}
        if "start_positions" in batch:  # extractive QA: the gold-answer tokens
            # a feature without its answer points at [CLS], which ``before`` leaves out
            start, end = batch["start_positions"], batch["end_positions"]
            groups["answer"] = answer_mask(start, end, groups[""].shape[1])
            groups["answer_ends"] = torch.zeros_like(groups[""]).scatter_(1, torch.stack([start, end], 1), True)
        for j, i in enumerate(layers):
            before = batch["attention_mask"].bool() if j == 0 else alive[j - 1][1]
            before = before.clone()
            before[:, 0] = False  # [CLS] is never skimmed
            push = -(g_task[j] if g_task[j] is not None else torch.zeros_like(ms[j]))
            pull = g_skim[j] if g_skim[j] is not None else torch.zeros_like(ms[j])
            for group, mask in groups.items():
                sums[group, i] = sums.get((group, i), 0) + _sums(push[before & mask], pull[before & mask])
    rows = []
    for i in sorted(i for group, i in sums if not group):
        row = {"layer": i, **_means(sums["", i])}
        for group in ANSWER_GROUPS:
            if (group, i) in sums:
                row |= {f"{group}_{c}": v for c, v in _means(sums[group, i]).items() if c in GROUP_COLUMNS}
        rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    columns = COLUMNS + tuple(f"{g}_{c}" for g in ANSWER_GROUPS for c in GROUP_COLUMNS if rows and f"{g}_tokens" in rows[0])
    lines = ["| layer | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for r in rows:
        cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in columns]
        lines.append(f"| {r['layer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_keep_pressure(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate

    validate_config(cfg)
    if cfg.get("n_batches", 0) < 1:
        raise ConfigError(f"n_batches must be a positive integer, got {cfg.get('n_batches')!r}")
    if cfg.skim.name != "transkimmer":
        raise ConfigError(f"skim.keep_pressure measures straight-through keep decisions (skim=transkimmer), got skim={cfg.skim.name}")
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    extra = {}
    if dm.task == "cls":
        extra = {"num_labels": dm.num_labels, "is_regression": dm.is_regression, "metric_names": dm.metric_names}
    module = run_module(cfg, **extra)
    rows = keep_pressure(module, islice(iter(dm.train_dataloader()), cfg.n_batches))
    record = {"overrides": hydra_overrides(), "git_commit": git_commit(), "n_batches": cfg.n_batches,
              "batch_size": cfg.data.batch_size, "data_info": dm.describe(), "layers": rows}
    write_report(cfg.paths.output_dir, "keep_pressure", record, to_markdown(rows))
    return {}


@hydra.main(version_base="1.3", config_path="../conf", config_name="keep_pressure")
def main(cfg: DictConfig) -> None:
    task_wrapper(run_keep_pressure)(cfg)


if __name__ == "__main__":
    run_cli(main)
