"""``python -m skim.dashboard entity=<team or user> project=<project>``: a W&B workspace with skim's standard panels.

The workspace (a saved view of the project, built with W&B's ``wandb-workspaces`` API) holds

* **Accuracy vs speed-up**: one point per run, best ``val/f1`` and best ``val/acc`` (their summaries are the best
  value: :mod:`skim.callbacks.wandb_media` defines them) against the final analytic speed-up ``val/flops/speedup``;
* **Kept ratio per layer**: the per-layer kept-ratio table each validation logs (``val/skim/kept_ratio_table``) as a
  line chart over layers, and the final ``val/skim/kept_layer{i}`` of every run as bars;
* **Loss curves**: training loss and its terms, validation loss;
* **What was skimmed**: the visualisation of fixed dev examples (``val/visualization``);

with the runs table grouped by strategy (config ``skim.name``), best score and speed-up pinned.

Options (``key=value``): ``entity`` (required), ``project`` (default ``skim``), ``name`` (the view's name),
``num_layers`` (how many ``kept_layer{i}`` bars; 12), ``spec_file`` (also write the view's JSON spec there),
``dry_run=true`` (print, do not save). Without network, an API key or with ``WANDB_MODE=offline`` it prints what it
would create, says why it cannot save, and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from skim.callbacks.wandb_media import KEPT_TABLE_KEY, STEP, VISUALIZATION_KEY
from skim.errors import ConfigError

STRATEGY_KEY = "skim.name"  # the composed config is logged whole: the strategy's name is config skim.name
SPEEDUP = "val/flops/speedup.last"  # define_metric(summary="last") keeps {"last": value}, shown as <key>.last
BEST = {"val/f1": "val/f1.max", "val/acc": "val/acc.max"}  # summary="max": {"max": value}


@dataclass
class DashboardConfig:
    entity: str | None = None
    project: str = "skim"
    name: str = "skim: accuracy vs speed-up"
    num_layers: int = 12
    spec_file: str | None = None
    dry_run: bool = False


def build_workspace(entity: str, project: str, name: str = DashboardConfig.name, num_layers: int = 12):
    """The workspace object (validated by ``wandb-workspaces`` as it is built; nothing is sent)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    if num_layers < 1:
        raise ConfigError(f"num_layers must be at least 1, got {num_layers}")
    speed = wr.SummaryMetric(SPEEDUP)
    sections = [
        ws.Section(name="Accuracy vs speed-up", is_open=True, panels=[
            wr.ScatterPlot(title=f"{metric} (best) vs analytic speed-up (final)", x=speed, y=wr.SummaryMetric(best))
            for metric, best in BEST.items()
        ]),
        ws.Section(name="Kept ratio per layer", is_open=True, panels=[
            wr.CustomChart(
                query={"summaryTable": {"tableKey": KEPT_TABLE_KEY}},
                chart_name="wandb/line/v0",
                chart_fields={"x": "layer", "y": "kept_ratio"},
                chart_strings={"title": "kept-token ratio entering each layer (last validation)"},
            ),
            wr.BarPlot(title="kept ratio entering each layer (final)",
                       metrics=[wr.SummaryMetric(f"val/skim/kept_layer{i}") for i in range(num_layers)]),
            wr.LinePlot(title="mean kept ratio while training", x=STEP, y=["train/skim/kept_mean"]),
        ]),
        ws.Section(name="Loss curves", is_open=True, panels=[
            wr.LinePlot(title="training loss", x=STEP, y=["train/loss"]),
            wr.LinePlot(title="training loss terms", x=STEP,
                        y=["train/qa_loss", "train/task_loss", "train/skim_loss"]),
            wr.LinePlot(title="validation loss", x=STEP, y=["val/loss"]),
        ]),
        ws.Section(name="What was skimmed", is_open=False, panels=[
            wr.MediaBrowser(title="fixed dev examples, shaded by the layers each token ran", media_keys=[VISUALIZATION_KEY]),
        ]),
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=sections,
        runset_settings=ws.RunsetSettings(
            groupby=[expr.Config(STRATEGY_KEY)],
            pinned_columns=[f"summary:{BEST['val/f1']}", f"summary:{BEST['val/acc']}", f"summary:{SPEEDUP}"],
        ),
    )


def spec(workspace) -> dict[str, Any]:
    """The view exactly as it would be sent (``wandb-workspaces``' own model of it), as plain JSON."""
    return json.loads(workspace._to_model().model_dump_json(by_alias=True, exclude_none=True))


def describe(workspace) -> str:
    lines = [f"workspace {workspace.name!r} in {workspace.entity}/{workspace.project} (runs grouped by {STRATEGY_KEY}):"]
    for section in workspace.sections:
        lines.append(f"  section {section.name!r}:")
        for panel in section.panels:
            title = getattr(panel, "title", None) or getattr(panel, "chart_strings", {}).get("title") or ""
            lines.append(f"    - {type(panel).__name__}: {title}")
    pinned = ", ".join(workspace.runset_settings.pinned_columns)
    lines.append(f"  runs table: grouped by config {STRATEGY_KEY}, pinned columns {pinned}")
    return "\n".join(lines)


def cannot_save_reason() -> str | None:
    """Why saving would fail, known before trying (offline mode, no API key, no connection), or None."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return f"WANDB_MODE={mode}: W&B workspaces live on the server (unset WANDB_MODE and run `wandb login`)"
    import wandb

    try:
        wandb.Api(timeout=20)
    except Exception as err:  # noqa: BLE001 - no key, no network, refused credentials: each is a reason
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}"
    return None


def parse(argv: list[str]) -> DashboardConfig:
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = OmegaConf.merge(OmegaConf.structured(DashboardConfig), OmegaConf.from_cli(argv))
    except (OmegaConfBaseException, ValueError) as err:
        raise ConfigError(f"{str(err).splitlines()[0]} (options: entity project name num_layers spec_file dry_run)") from None
    if not cfg.entity:
        raise ConfigError("entity is required: python -m skim.dashboard entity=<W&B team or user> project=<project>")
    return OmegaConf.to_object(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = parse(argv)
        workspace = build_workspace(cfg.entity, cfg.project, cfg.name, cfg.num_layers)
        view = spec(workspace)
    except ConfigError as err:
        print(f"skim: error: {err}", file=sys.stderr)
        return 2
    print(describe(workspace))
    if cfg.spec_file:
        Path(cfg.spec_file).write_text(json.dumps(view, indent=1))
        print(f"spec: {cfg.spec_file}")
    if cfg.dry_run:
        print("dry run: not saved")
        return 0
    reason = cannot_save_reason()
    if reason is None:
        try:
            workspace.save()
            print(f"saved: {workspace.url}")
            return 0
        except Exception as err:  # noqa: BLE001 - the server's answer, whatever it is, is the reason
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}"
    print(f"skim.dashboard: cannot save the workspace ({reason}); the above is what it would create", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
