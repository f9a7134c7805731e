"""``python -m skim.report``: turn result rows (one JSON line per finished job) into a markdown table.

    python -m skim.report                          # every row of logs/results.jsonl
    python -m skim.report --under logs/quickstart/multiruns/2026-...   # the jobs of one sweep
    python -m skim.report --metrics val/em val/f1 val/skim/kept_mean
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_METRICS = ("val/em", "val/f1", "val/acc", "val/skim/kept_mean")


def load_rows(path: str | Path, under: str | None = None) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"skim.report: no results file at {p}")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SystemExit(f"skim.report: {p}:{n}: not a JSON line ({err.msg})") from None
        if under and not str(Path(row.get("run_dir", "")).resolve()).startswith(str(Path(under).resolve())):
            continue
        rows.append(row)
    return rows


def kept_layers(metrics: dict[str, Any]) -> list[float]:
    keys = sorted((k for k in metrics if k.startswith("val/skim/kept_layer")), key=lambda k: int(k.rsplit("layer", 1)[1]))
    return [float(metrics[k]) for k in keys]


def markdown_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = DEFAULT_METRICS) -> str:
    present = [m for m in metrics if any(m in r.get("metrics", {}) for r in rows)]
    head = ["run", "model", "skim", "data", "padding", *present, "kept ratio per layer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r.get("metrics", {})
        cells = [
            Path(r.get("run_dir", "?")).name,
            str(r.get("model")),
            str(r.get("skim")),
            str(r.get("data")),
            str(r.get("padding")),
            *(f"{m[k]:.2f}" if k in m and "kept" not in k else (f"{m[k]:.3f}" if k in m else "") for k in present),
            " ".join(f"{x:.2f}" for x in kept_layers(m)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m skim.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=None, help="results file (default: <repo>/logs/results.jsonl)")
    ap.add_argument("--under", default=None, help="only rows whose run directory lies under this folder (a sweep)")
    ap.add_argument("--metrics", nargs="*", default=list(DEFAULT_METRICS))
    args = ap.parse_args(argv)
    if args.file is None:
        from skim.utils.resolvers import skim_root

        args.file = str(Path(skim_root()) / "logs" / "results.jsonl")
    rows = load_rows(args.file, args.under)
    if not rows:
        print("no finished runs found", file=sys.stderr)
        return 1
    print(markdown_table(rows, tuple(args.metrics)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
