"""``python -m skim.quickstart``: the offline end-to-end demo (2-core CPU, no downloads, no ../shared).

It runs the real entry point as a Hydra multirun, ``python -m skim.train -m experiment=quickstart
skim=none,blockskim``, on the synthetic extractive-QA set that skim generates, then prints dense and Block-Skim
EM/F1 and per-layer kept-token ratios side by side. Extra arguments are passed on as overrides.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from skim.report import kept_layers


def main(argv: list[str] | None = None) -> int:
    from skim.utils.resolvers import skim_root

    extra = list(sys.argv[1:] if argv is None else argv)
    root = Path(skim_root())
    sweep = root / "logs" / "quickstart" / "multiruns" / time.strftime("%Y-%m-%d_%H-%M-%S")
    cmd = [sys.executable, "-m", "skim.train", "-m", "experiment=quickstart", "skim=none,blockskim", f"hydra.sweep.dir={sweep}", *extra]
    print("$ " + " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd)
    if rc:
        print(f"skim.quickstart: the training sweep failed (exit {rc})", file=sys.stderr)
        return rc
    records = []
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
        mfile = job / "metrics.json"
        if not mfile.exists():
            print(f"skim.quickstart: job {job} did not finish (see its log)", file=sys.stderr)
            return 1
        records.append(json.loads(mfile.read_text()))
    print(f"\nquickstart finished in {time.time() - t0:.0f} s; runs under {sweep}\n")
    print(f"{'skim':<10} {'EM':>6} {'F1':>6}   kept-token ratio per layer (padding excluded)")
    for r in records:
        m = r["metrics"]
        print(f"{r['skim']:<10} {m['val/em']:6.2f} {m['val/f1']:6.2f}   " + " ".join(f"{x:.3f}" for x in kept_layers(m)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
