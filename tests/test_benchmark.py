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
        [*TINY, "data=squad_local", "data.max_eval_samples=48", "skim=truncate", "skim.keep_after=1", "skim.keep_ratio=0.333",
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


def test_benchmark_times_blockskim_with_both_attention_paths(tmp_run_root):
    """Untrained Block-Skim predictors with a calibrated threshold (a real keep decision of about one third after
    layer 1), timed with the fused diagonal-block path and with HF eager attention in one run: both paths make the
    same decisions on the same batches."""
    require_shared(SQUAD_DEV)
    from skim.benchmark import benchmark

    out = tmp_run_root / "bench"
    cfg = compose_cfg(
        [*TINY, "data=squad_local", "data.max_eval_samples=48", "skim=blockskim", "skim.skim_layers=[1]",
         "calibrate_keep_ratio=0.333", "skim_attention=[auto,eager]", "batch_sizes=[8]", "dtypes=[fp32]",
         "dense_attention=[sdpa]", "num_batches=2", "warmup=0", "repeats=2", "progress_bar=false"],
        config_name="benchmark",
        output_dir=out,
    )
    flat = benchmark(cfg)
    report = json.loads((out / "benchmark.json").read_text())
    assert 0.0 < report["calibrated_threshold"] < 1.0
    fused, eager = report["results"]
    assert (fused["skim"]["attn"], eager["skim"]["attn"]) == ("skim_blockskim", "eager")
    assert fused["kept_ratio_per_layer"] == eager["kept_ratio_per_layer"]
    kept = fused["kept_ratio_per_layer"]
    assert kept[:2] == [1.0, 1.0] and 0.2 < kept[2] < 0.5 and kept[2:] == [kept[2]] * 4
    d = fused["dense"]["sdpa"]
    assert d["analytic_speedup"] > 1.3
    # the batches' padding: every example pays the longest kept example's width, so the reachable factor is lower
    assert 1.0 < d["analytic_speedup_as_run"] < d["analytic_speedup"]
    assert d["realised_over_as_run"] == pytest.approx(d["speedup"] / d["analytic_speedup_as_run"])
    assert {"bench/bs8_fp32/skim_seq_per_s", "bench/bs8_fp32/skim_seq_per_s_eager"} <= set(flat)
    md = (out / "benchmark.md").read_text()
    assert "| 8 | fp32 | skim_blockskim | sdpa |" in md and "| 8 | fp32 | eager | sdpa |" in md
    assert "threshold calibrated" in md
    # repeats=2: every batch timed twice per model, the models taking turns, the fastest call kept
    assert report["repeats"] == 2 and "each batch timed 2 times per model" in md


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
    # one checkpoint scored with other decisions or per-layer thresholds: the points must say which
    assert point_label({"overrides": ["skim.skim_coefficient=0.5", "skim.eval_decision=argmax"]}) == "skim_coefficient=0.5 eval_decision=argmax"
    assert point_label({"overrides": ["skim.layer_thresholds=[0.5,0]"]}) == "layer_thresholds=[0.5,0]"


def _row(run: str, skim: str, f1: float, speedup: float, data_info: dict | None, **metrics) -> dict:
    return {"run_dir": f"/r/{run}", "model": "tiny", "skim": skim, "data": "squad", "padding": "dynamic",
            "data_info": data_info, "metrics": {"val/f1": f1, "val/flops/speedup": speedup, **metrics}}


def test_report_marks_partial_evaluations_from_recorded_counts(tmp_path):
    from skim.report import PARTIAL_MARK, is_partial, main, scored_cell

    full = _row("full", "none", 80.0, 1.0, {"eval_examples": 10570, "eval_split_examples": 10570})
    # trainer.limit_val_batches: the QA module logs how many examples it could score in full
    limited = _row("limited", "blockskim", 79.0, 2.0, {"eval_examples": 10570}, **{"val/num_scored": 620.0})
    # data.max_eval_samples: every evaluated example is scored, but the split holds more
    subset = _row("subset", "blockskim", 81.0, 1.5, {"eval_examples": 2000, "eval_split_examples": 10570})
    # a row without the split's size (older runs): its count, with no claim that the split was complete
    no_split = _row("old", "none", 80.0, 1.0, {"eval_examples": 2000})
    unknown = _row("bench", "truncate", 0.0, 3.0, None)
    rows = (full, limited, subset, no_split, unknown)
    assert [is_partial(r) for r in rows] == [False, True, True, False, False]
    assert [scored_cell(r) for r in rows] == [
        "10570/10570", f"620/10570 {PARTIAL_MARK}", f"2000/10570 {PARTIAL_MARK}", "2000", ""]
    f = tmp_path / "results.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in (full, limited, subset)) + "\n")
    md = tmp_path / "table.md"
    assert main(["--file", str(f), "--output", str(md)]) == 0
    lines = md.read_text().splitlines()
    assert lines[0].split(" | ")[5] == "scored"
    assert [ln.split(" | ")[5] for ln in lines[2:5]] == ["10570/10570", f"620/10570 {PARTIAL_MARK}", f"2000/10570 {PARTIAL_MARK}"]
    assert lines[-1].startswith(f"{PARTIAL_MARK} partial evaluation")
    # complete rows only: no footnote
    f.write_text(json.dumps(full) + "\n")
    assert main(["--file", str(f), "--output", str(md)]) == 0
    assert PARTIAL_MARK not in md.read_text()


def test_pareto_plot_draws_partial_points_hollow_and_keeps_them_off_the_front():
    import matplotlib.pyplot as plt

    from skim.report import pareto_figure

    rows = [
        _row("dense", "none", 80.0, 1.0, {"eval_examples": 100}),
        _row("t0.1", "blockskim", 78.0, 1.5, {"eval_examples": 100}),
        # would dominate both if a partial evaluation counted
        _row("t0.5", "blockskim", 90.0, 2.0, {"eval_examples": 100}, **{"val/num_scored": 40.0}),
    ]
    fig = pareto_figure(rows, "val/f1")
    ax = fig.axes[0]
    points = {tuple(c.get_offsets()[0]): c for c in ax.collections if len(c.get_offsets())}
    assert len(points[(2.0, 90.0)].get_facecolors()) == 0  # hollow: matplotlib holds no face colour
    assert points[(1.5, 78.0)].get_facecolors()[:, 3].tolist() == [1.0]
    # the hollow point keeps its strategy's colour on the edge
    assert points[(2.0, 90.0)].get_edgecolors()[0].tolist() == points[(1.5, 78.0)].get_facecolors()[0].tolist()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "hollow: partial evaluation" in legend and "Pareto front (complete evaluations)" in legend
    (front,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("Pareto front")]
    assert list(zip(front.get_xdata(), front.get_ydata())) == [(1.0, 80.0), (1.5, 78.0)]
    assert any("(40/100)" in t.get_text() for t in ax.texts)
    plt.close(fig)


def test_report_errors_are_one_line(tmp_path, capsys):
    from skim.report import main

    assert main(["--file", str(tmp_path / "none.jsonl")]) == 2
    assert capsys.readouterr().err.startswith(f"skim: error: --file {tmp_path / 'none.jsonl'}: no results file")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"run_dir": "/r/0", "metrics": {}}\nnot json\n')
    assert main(["--file", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"skim: error: --file {bad}:2: not a JSON line")
    assert main(["--file", str(bad.with_name("ok.jsonl"))]) == 2
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"run_dir": "/r/0", "skim": "none", "metrics": {"val/acc": 90.0}}\n')
    assert main(["--file", str(ok), "--under", "/elsewhere"]) == 2
    assert capsys.readouterr().err.strip().endswith("no finished runs in " + str(ok) + " under /elsewhere")
