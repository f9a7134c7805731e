"""skim.benchmark end to end on CPU (tiny shapes, real SQuAD dev batches) and skim.report."""

from __future__ import annotations

import json

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import SQUAD_DEV, require_shared
from tests.helpers.runs import compose_cfg

TINY = ["model=tiny", "model.config_overrides.num_hidden_layers=6", "model.config_overrides.hidden_size=64"]


@pytest.fixture(autouse=True)
def _clear_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def test_benchmark_writes_json_and_markdown(tmp_run_root):
    require_shared(SQUAD_DEV)
    from skim.benchmark import benchmark

    out = tmp_run_root / "bench"
    cfg = compose_cfg(
        [*TINY, "data=squad_local", "data.max_eval_samples=48", "skim=forced", "skim.keep_after=1", "skim.keep_ratio=0.333",
         "batch_sizes=[1,8]", "dtypes=[fp32,bf16]", "num_batches=2", "warmup=1", "progress_bar=false"],
        config_name="benchmark",
        output_dir=out,
    )
    flat = benchmark(cfg)
    report = json.loads((out / "benchmark.json").read_text())
    assert report["padding"] == "dynamic" and report["device"].startswith("cpu")
    assert {"torch", "transformers", "lightning"} <= set(report["versions"])
    assert len(report["results"]) == 4
    for row in report["results"]:
        assert row["kept_ratio_per_layer"][:2] == [1.0, 1.0]
        assert row["kept_ratio_per_layer"][2] == pytest.approx(0.333, abs=0.01)
        for attn in ("eager", "sdpa"):
            d = row["dense"][attn]
            assert d["analytic_speedup"] > 1.5 and d["speedup"] > 0
    assert "| bs | dtype |" in (out / "benchmark.md").read_text()
    assert any(k.endswith("analytic_speedup") for k in flat)
    row = json.loads((tmp_run_root / "logs" / "results.jsonl").read_text().splitlines()[-1])
    assert row["task_name"] == "benchmark"


def test_report_table_and_pareto_plot(tmp_path):
    from skim.report import main, pareto_front

    rows = [
        {"run_dir": "/r/0", "model": "tiny", "skim": "none", "data": "squad", "padding": "dynamic",
         "metrics": {"val/f1": 80.0, "val/flops/speedup": 1.0, "val/skim/kept_layer0": 1.0}},
        {"run_dir": "/r/1", "model": "tiny", "skim": "blockskim", "data": "squad", "padding": "dynamic",
         "metrics": {"val/f1": 79.0, "val/flops/speedup": 2.0, "val/skim/kept_layer0": 1.0, "val/skim/kept_layer1": 0.4}},
        {"run_dir": "/r/2", "model": "tiny", "skim": "blockskim", "data": "squad", "padding": "dynamic",
         "metrics": {"val/f1": 70.0, "val/flops/speedup": 1.5}},
    ]
    f = tmp_path / "results.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert pareto_front([(1.0, 80.0), (2.0, 79.0), (1.5, 70.0)]) == [0, 1]
    png = tmp_path / "pareto.png"
    md = tmp_path / "table.md"
    assert main(["--file", str(f), "--plot", str(png), "--output", str(md)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = md.read_text()
    assert "blockskim" in table and "1.00 0.40" in table
    # several --under folders: the rows of all of them (e.g. a sweep and its dense reference run)
    assert main(["--file", str(f), "--under", "/r/0", "/r/2", "--output", str(md)]) == 0
    assert [ln.split(" | ")[0] for ln in md.read_text().splitlines()[2:]] == ["| 0", "| 2"]


def test_point_labels_name_the_swept_setting():
    from skim.report import point_label

    assert point_label({"overrides": ["experiment=x", "skim.threshold=0.3"]}) == "threshold=0.3"
    assert point_label({"overrides": ["+skim.skim_coefficient=0.5"]}) == "skim_coefficient=0.5"
    assert point_label({"overrides": ["data=squad"]}) == ""
