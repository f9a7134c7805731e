"""W&B beyond scalars, read back from real offline runs (no mocks): a Block-Skim fast dev run holds the per-layer
kept-ratio table and plot and the HTML visualisation; the summary keeps the best F1 and the final speed-up; skim.report
logs the Pareto plot as an image."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

from tests.conftest import SQUAD_DEV, require_shared
from tests.helpers import wandb_offline as wo
from tests.helpers.runs import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
RUN = [
    "model=tiny", "model.config_overrides.hidden_size=32", "model.config_overrides.num_hidden_layers=2",
    "data=squad_local", f"data.train_file={SQUAD_DEV}", f"data.validation_file={SQUAD_DEV}",
    "data.max_train_samples=16", "data.max_eval_samples=16", "data.batch_size=8",
    "skim=blockskim_fixed", "skim.threshold=0.5", "trainer=cpu", "logger=wandb", "callbacks.wandb_media.examples=2",
]


def _train(overrides: list[str], out: Path) -> Path:
    import wandb

    from skim.train import train
    from skim.utils.run import task_wrapper

    GlobalHydra.instance().clear()
    cfg = compose_cfg(overrides, output_dir=out)
    task_wrapper(train)(cfg)
    assert wandb.run is None  # finished: the run's files are complete
    return wo.offline_run_dir(out)


def test_blockskim_fast_dev_run_logs_table_plot_and_visualisation(tmp_run_root):
    require_shared(SQUAD_DEV)
    run_dir = _train([*RUN, "debug=fdr"], tmp_run_root / "fdr")
    recs = wo.records(run_dir)
    defined = wo.metric_definitions(recs)
    assert defined["val/f1"].summary.max and defined["val/em"].summary.max and defined["val/loss"].summary.min
    assert defined["val/flops/speedup"].summary.last
    rows = [r for r in wo.history(recs) if "val/visualization" in r]
    assert len(rows) == 1  # the fast dev run's one validation
    row = rows[0]
    assert row["val/skim/kept_ratio_table"]["_type"] == "table-file"
    assert row["val/visualization"]["_type"] == "html-file"
    # the line plot's table is logged beside it (a Vega panel over that table)
    assert any(k.startswith("val/skim/kept_ratio_plot") for k in row)
    table = json.loads((run_dir / "files" / row["val/skim/kept_ratio_table"]["path"]).read_text())
    assert table["columns"] == ["layer", "kept_ratio", "kept_context_ratio"]
    assert [r[0] for r in table["data"]] == [0, 1] and table["data"][0][1] == 1.0
    assert all(0.0 <= r[1] <= 1.0 for r in table["data"])
    page = (run_dir / "files" / row["val/visualization"]["path"]).read_text()
    with gzip.open(SQUAD_DEV) as f:
        first = json.loads(f.read())["data"][0]["paragraphs"][0]
    text = re.sub(r"<[^>]+>", "", page)
    import html

    text = html.unescape(text)
    # the two fixed examples: the dev set's first two questions over their context, as written
    assert first["qas"][0]["question"] in text and first["qas"][1]["question"] in text and first["context"] in text
    assert page.count("class='ex'") == 2 and "Block-Skim P(keep)" not in text  # the heatmap is an image
    assert page.count("data:image/png;base64,") == 2


def test_summary_holds_best_f1_and_final_speedup(tmp_run_root):
    require_shared(SQUAD_DEV)
    run_dir = _train([*RUN, "callbacks.wandb_media.examples=0", "trainer.max_epochs=2", "+trainer.limit_train_batches=1",
                      "final_eval=none"], tmp_run_root / "two")
    recs = wo.records(run_dir)
    hist = [r for r in wo.history(recs) if "val/f1" in r]
    assert len(hist) == 2
    summ = wo.summary(recs)
    assert summ["val/f1"] == {"max": max(r["val/f1"] for r in hist)}
    assert summ["val/flops/speedup"] == {"last": hist[-1]["val/flops/speedup"]}
    assert not any("val/visualization" in r for r in wo.history(recs))  # examples=0 turns it off
    assert sum("val/skim/kept_ratio_table" in r for r in wo.history(recs)) == 2


def test_report_logs_the_pareto_plot_to_wandb(tmp_path, monkeypatch):
    from skim import report

    rows = [json.loads(p.read_text()) for p in sorted((ROOT / "results" / "cpu-squad").glob("*/metrics.json"))]
    rows += [json.loads(p.read_text()) for p in sorted((ROOT / "results" / "cpu-squad" / "blockskim_sweep").glob("*/metrics.json"))]
    rows = [r for r in rows if "val/f1" in r.get("metrics", {})]
    assert len(rows) >= 5
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert report.main(["--file", str(tmp_path / "results.jsonl"), "--plot", "p.png", "--wandb-project", "skim-test"]) == 0
    run_dir = wo.offline_run_dir(tmp_path)
    (row,) = wo.history(wo.records(run_dir))
    assert row["report/pareto"]["_type"] == "image-file" and row["report/rows"]["_type"] == "table-file"
    image = run_dir / "files" / row["report/pareto"]["path"]
    assert image.read_bytes() == (tmp_path / "p.png").read_bytes()
    table = json.loads((run_dir / "files" / row["report/rows"]["path"]).read_text())
    assert len(table["data"]) == len(rows) and "val/f1" in table["columns"]
