"""skim.dashboard: the workspace spec is built and validated offline by wandb-workspaces; it reads the keys that
skim logs; without a server the command prints what it would create and why it cannot save."""

from __future__ import annotations

import pytest

from skim.callbacks.wandb_media import BEST_METRICS, KEPT_TABLE_KEY, LAST_METRICS, STEP, VISUALIZATION_KEY


def _panels(view):
    return {s["name"]: s["panels"] for s in view["spec"]["section"]["panelBankConfig"]["sections"]}


def test_spec_has_the_standard_panels_and_round_trips():
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces.workspaces import internal

    from skim.dashboard import build_workspace, spec

    workspace = build_workspace("my-team", "skim", num_layers=6)
    view = spec(workspace)
    assert (view["entity"], view["project"], view["displayName"]) == ("my-team", "skim", "skim: accuracy vs speed-up")
    panels = _panels(view)
    assert list(panels) == ["Accuracy vs speed-up", "Kept ratio per layer", "Loss curves", "What was skimmed"]
    scatter = [p["config"] for p in panels["Accuracy vs speed-up"]]
    assert {p["viewType"] for p in panels["Accuracy vs speed-up"]} == {"Scatter Plot"}
    # summaries as the callback defines them: best score ({"max": ...}), final speed-up ({"last": ...})
    assert {(c["xAxis"], c["yAxis"]) for c in scatter} == {
        ("summary:val/flops/speedup.last", "summary:val/f1.max"), ("summary:val/flops/speedup.last", "summary:val/acc.max")
    }
    assert {"val/f1", "val/acc"} <= set(BEST_METRICS) and "val/flops/speedup" in LAST_METRICS
    kept = {p["viewType"]: p["config"] for p in panels["Kept ratio per layer"]}
    assert kept["Vega2"]["panelDefId"] == "wandb/line/v0" and KEPT_TABLE_KEY in str(kept["Vega2"]["userQuery"])
    assert kept["Bar Chart"]["metrics"] == [f"summary_metrics.val/skim/kept_layer{i}" for i in range(6)]
    losses = [m for p in panels["Loss curves"] for m in p["config"]["metrics"]]
    assert {"train/loss", "val/loss", "train/skim_loss"} <= set(losses)
    assert all(p["config"]["xAxis"] == STEP for p in panels["Loss curves"])
    assert panels["What was skimmed"][0]["config"]["mediaKeys"] == [VISUALIZATION_KEY]
    (runset,) = view["spec"]["section"]["runSets"]
    assert runset["grouping"] == [{"section": "config", "name": "skim.value.name"}]
    assert "summary:val/f1.max" in runset["runFeed"]["columnPinned"]
    # wandb-workspaces reads its own spec back into the same workspace
    back = ws.Workspace._from_model(internal.View.model_validate(workspace._to_model().model_dump()))
    assert [s.name for s in back.sections] == [s.name for s in workspace.sections]
    assert [len(s.panels) for s in back.sections] == [2, 3, 3, 1]


def test_offline_prints_the_workspace_and_why_it_cannot_save(tmp_path, monkeypatch, capsys):
    import json

    from skim.dashboard import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["entity=my-team", "project=skim", f"spec_file={tmp_path / 'spec.json'}"]) == 1
    out, err = capsys.readouterr()
    assert "section 'Accuracy vs speed-up'" in out and "ScatterPlot" in out and "grouped by config skim.name" in out
    assert "cannot save the workspace (WANDB_MODE=offline" in err
    assert _panels(json.loads((tmp_path / "spec.json").read_text()))["What was skimmed"]


def test_without_an_api_key_it_says_so(tmp_path):
    """In its own process: wandb keeps the settings it first saw (online, no key) for the rest of a process, which
    would turn every later offline run of the test session into a login error."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"), HF_HUB_OFFLINE="1")  # no ~/.netrc
    proc = subprocess.run([sys.executable, "-m", "skim.dashboard", "entity=my-team"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "No API key" in proc.stderr


@pytest.mark.parametrize(("argv", "message"), [(["project=skim"], "entity is required"),
                                               (["entity=x", "num_layer=3"], "num_layer"),
                                               (["entity=x", "num_layers=0"], "num_layers must be at least 1")])
def test_bad_options_are_one_error(argv, message, capsys):
    from skim.dashboard import main

    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("skim: error:") and message in line
