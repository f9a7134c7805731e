"""``python -m skim.report``: turn result rows (one JSON line per finished job) into a markdown table.

    python -m skim.report                          # every row of logs/results.jsonl
    python -m skim.report --under logs/quickstart/multiruns/2026-...   # the jobs of one sweep (several folders: all of them)
    python -m skim.report --metrics val/em val/f1 val/skim/kept_mean
    python -m skim.report --plot pareto.png --wandb-project skim   # also log the plot and the table to a W&B run

A row scored on fewer examples than its evaluation split holds (``trainer.limit_val_batches``,
``data.max_eval_samples``) is marked partial: ``620/10570 †`` in the ``scored`` column, a hollow marker on the plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from skim.errors import ConfigError

# val/skim/answer_reachable (extractive QA): the share of answer-holding features whose answer's first and last tokens
# reached the output
DEFAULT_METRICS = ("val/em", "val/f1", "val/acc", "val/skim/kept_mean", "val/skim/answer_reachable", "val/flops/speedup",
                   "val/flops/speedup_vs_padded")


def load_rows(path: str | Path, under: str | list[str] | None = None) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--file {p}: no results file there (a finished train/eval/benchmark job appends to it)")
    folders = [under] if isinstance(under, str) else list(under or [])
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--file {p}:{n}: not a JSON line ({err.msg})") from None
        if under and not any(str(Path(row.get("run_dir", "")).resolve()).startswith(str(Path(u).resolve())) for u in folders):
            continue
        rows.append(row)
    return rows


def kept_layers(metrics: dict[str, Any]) -> list[float]:
    keys = sorted((k for k in metrics if k.startswith("val/skim/kept_layer")), key=lambda k: int(k.rsplit("layer", 1)[1]))
    return [float(metrics[k]) for k in keys]


PARTIAL_MARK = "†"
PARTIAL_NOTE = (
    f"{PARTIAL_MARK} partial evaluation: scored on fewer examples than the evaluation split holds "
    "(trainer.limit_val_batches or data.max_eval_samples); not comparable with complete rows."
)


def scored(row: dict[str, Any]) -> tuple[int | None, int | None]:
    """(examples scored, examples it should be compared with) as the run recorded them; None where it did not.

    Scored: ``val/num_scored`` (logged by a limited evaluation, which scores only the examples it saw in full), else
    every evaluated example (``data_info.eval_examples``, after ``data.max_eval_samples``). Compared with: the
    evaluation split's size (``data_info.eval_split_examples``, before ``data.max_eval_samples``) where recorded,
    else the evaluated examples.
    """
    info = row.get("data_info") or {}
    evaluated = info.get("eval_examples")
    total = info.get("eval_split_examples", evaluated)
    n = row.get("metrics", {}).get("val/num_scored", evaluated)
    return (int(n) if n is not None else None, int(total) if total is not None else None)


def is_partial(row: dict[str, Any]) -> bool:
    n, total = scored(row)
    return n is not None and total is not None and n < total


def scored_cell(row: dict[str, Any]) -> str:
    n, total = scored(row)
    if n is None:
        return ""
    if is_partial(row):
        return f"{n}/{total} {PARTIAL_MARK}"
    # without the split's size "2000/2000" would claim a complete split that a data.max_eval_samples run is not
    return f"{n}/{total}" if "eval_split_examples" in (row.get("data_info") or {}) else f"{n}"


def markdown_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = DEFAULT_METRICS) -> str:
    present = [m for m in metrics if any(m in r.get("metrics", {}) for r in rows)]
    head = ["run", "model", "skim", "data", "padding", "scored", *present, "kept ratio per layer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r.get("metrics", {})
        cells = [
            # what the row is (task and swept setting); the run directory name is only a timestamp
            " ".join(x for x in (str(r.get("task_name") or Path(r.get("run_dir", "?")).name), point_label(r)) if x),
            str(r.get("model")),
            str(r.get("skim")),
            str(r.get("data")),
            str(r.get("padding")),
            scored_cell(r),
            *("" if k not in m else f"{m[k]:.3f}" if k.startswith("val/skim/") else f"{m[k]:.2f}" for k in present),
            " ".join(f"{x:.2f}" for x in kept_layers(m)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if any(is_partial(r) for r in rows):
        lines += ["", PARTIAL_NOTE]
    return "\n".join(lines)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (speed-up up, accuracy up)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


#: overrides that tell the points of one sweep apart on a plot
POINT_KEYS = ("skim.threshold", "skim.layer_thresholds", "skim.eval_decision", "skim.skim_coefficient", "skim.keep_ratio")


def point_label(row: dict[str, Any]) -> str:
    """The swept setting of a row (e.g. ``threshold=0.3``), from its overrides."""
    found = [o.split("=", 1) for o in row.get("overrides", []) if "=" in o and o.split("=", 1)[0].lstrip("+") in POINT_KEYS]
    return " ".join(f"{k.lstrip('+').split('.')[-1]}={v}" for k, v in found)


def pareto_figure(rows: list[dict[str, Any]], accuracy: str, speed: str = "val/flops/speedup"):
    """Accuracy vs speed-up scatter, one colour per strategy, partial evaluations hollow, Pareto front drawn (on the
    current matplotlib backend: inline in a notebook; :func:`pareto_plot` writes files with Agg)."""
    import matplotlib.pyplot as plt

    pts = [(float(r["metrics"][speed]), float(r["metrics"][accuracy]), r) for r in rows if speed in r.get("metrics", {}) and accuracy in r.get("metrics", {})]
    if not pts:
        raise ConfigError(f"--plot: no rows with both {accuracy} and {speed}; choose them with --accuracy / --speed")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for c, name in enumerate(sorted({str(r.get("skim")) for _, _, r in pts})):
        dense = name == "none"
        colour = colours[c % len(colours)]
        style = {"s": 120 if dense else 30, "marker": "*" if dense else "o", "zorder": 3}
        for partial in (False, True):
            xy = [(x, y) for x, y, r in pts if str(r.get("skim")) == name and is_partial(r) == partial]
            if not xy:
                continue
            fill = {"facecolors": "none", "edgecolors": colour} if partial else {"color": colour}
            # one legend entry per strategy; partial points share the hollow-marker entry below
            label = None if partial else ("dense" if dense else name)
            ax.scatter([x for x, _ in xy], [y for _, y in xy], label=label, **fill, **style)
    any_partial = any(is_partial(r) for _, _, r in pts)
    if any_partial:
        ax.scatter([], [], facecolors="none", edgecolors="grey", marker="o", label="hollow: partial evaluation")
    for x, y, r in pts:
        label = point_label(r)
        if is_partial(r):
            label = f"{label} ({scored_cell(r).removesuffix(PARTIAL_MARK).strip()})".strip()
        if label:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    # a partial evaluation is not comparable with complete ones: it may not dominate them
    on_front = [p for p in pts if not is_partial(p[2])] or pts
    front = pareto_front([(x, y) for x, y, _ in on_front])
    front_label = "Pareto front (complete evaluations)" if any_partial and len(on_front) < len(pts) else "Pareto front"
    ax.plot([on_front[i][0] for i in front], [on_front[i][1] for i in front], "k--", lw=1, label=front_label)
    ax.set_xlabel(f"speed-up ({speed})")
    ax.set_ylabel(accuracy)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def pareto_plot(rows: list[dict[str, Any]], path: str | Path, accuracy: str, speed: str = "val/flops/speedup") -> Path:
    """:func:`pareto_figure`, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = pareto_figure(rows, accuracy, speed)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m skim.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=None, help="results file (default: <repo>/logs/results.jsonl)")
    ap.add_argument("--under", nargs="*", default=None, help="only rows whose run directory lies under one of these folders (a sweep, a run)")
    ap.add_argument("--metrics", nargs="*", default=list(DEFAULT_METRICS))
    ap.add_argument("--output", default=None, help="also write the markdown table to this file")
    ap.add_argument("--plot", default=None, help="write an accuracy-vs-speed-up Pareto plot (PNG) here")
    ap.add_argument("--accuracy", default=None, help="metric on the plot's y axis (default: val/f1, else val/acc)")
    ap.add_argument("--speed", default="val/flops/speedup", help="metric on the plot's x axis")
    ap.add_argument("--wandb-project", default=None, help="also log the Pareto plot (wandb.Image) and the rows (wandb.Table) "
                    "to a new W&B run of this project (job_type=report; WANDB_MODE=offline works)")
    ap.add_argument("--wandb-entity", default=None, help="W&B entity (team or user) of --wandb-project")
    ap.add_argument("--wandb-dir", default=".", help="where W&B keeps the run's local files (default: here, ./wandb)")
    args = ap.parse_args(argv)
    if args.file is None:
        from skim.utils.resolvers import skim_root

        args.file = str(Path(skim_root()) / "logs" / "results.jsonl")
    try:
        rows = load_rows(args.file, args.under)
        if not rows:
            raise ConfigError(f"no finished runs in {args.file}" + (f" under {' '.join(args.under)}" if args.under else ""))
        table = markdown_table(rows, tuple(args.metrics))
        acc = args.accuracy or ("val/f1" if any("val/f1" in r.get("metrics", {}) for r in rows) else "val/acc")
        if args.wandb_project and not args.plot:
            args.plot = "pareto.png"
        plot = pareto_plot(rows, args.plot, acc, args.speed) if args.plot else None
    except ConfigError as err:
        print(f"skim: error: {err}", file=sys.stderr)
        return 2
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    if plot:
        print(f"plot: {plot}")
    if args.wandb_project:
        url = log_to_wandb(rows, plot, args.wandb_project, args.wandb_entity, tuple(args.metrics), args.wandb_dir)
        print(f"wandb: {url}")
    return 0


def log_to_wandb(rows: list[dict[str, Any]], plot: Path, project: str, entity: str | None,
                 metrics: tuple[str, ...] = DEFAULT_METRICS, save_dir: str | Path = ".") -> str:
    """One W&B run (``job_type=report``) holding ``report/pareto`` (the PNG as ``wandb.Image``) and ``report/rows``
    (one table row per result: run, strategy, data, swept setting, the metrics, the kept ratio per layer)."""
    import wandb

    present = [m for m in metrics if any(m in r.get("metrics", {}) for r in rows)]
    columns = ["run", "skim", "data", "model", "setting", "partial", *present, "kept_ratio_per_layer"]
    data = [
        [str(r.get("task_name") or Path(r.get("run_dir", "?")).name), str(r.get("skim")), str(r.get("data")),
         str(r.get("model")), point_label(r), is_partial(r), *(r.get("metrics", {}).get(m) for m in present),
         " ".join(f"{x:.3f}" for x in kept_layers(r.get("metrics", {})))]
        for r in rows
    ]
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, job_type="report", name="skim.report", dir=str(Path(save_dir).resolve()),
                     settings=wandb.Settings(init_timeout=60))
    try:
        run.log({"report/pareto": wandb.Image(str(plot)), "report/rows": wandb.Table(columns=columns, data=data)})
        return run.url or run.dir
    finally:
        run.finish()


if __name__ == "__main__":
    raise SystemExit(main())
