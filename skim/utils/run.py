"""Run plumbing shared by the entry points: instantiation, failure handling, run records and the results file."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException, InstantiationException, OverrideParseException
from omegaconf import DictConfig

from skim.errors import ConfigError, RunInterrupted, SkimError, one_line

log = logging.getLogger("skim")

# what only a finished run holds: a failed or interrupted run must not leave an earlier validation's copy behind
RESULT_FILES = ("metrics.json", "predictions.json", "skimmed_tokens.json")


def instantiate_group(cfg: DictConfig, group: str) -> list[Any]:
    """Instantiate every entry with a ``_target_`` in the group node ``cfg.<group>`` (callbacks, logger)."""
    node = cfg.get(group)
    if not node:
        return []
    return [instantiate_option(entry, f"{group}.{key}") for key, entry in node.items()
            if isinstance(entry, DictConfig) and "_target_" in entry]  # fmt: skip


def instantiate_option(node: DictConfig, where: str, **kwargs: Any) -> Any:
    """``node`` instantiated (with ``kwargs``). Its arguments come from config, so what its class refuses
    (``callbacks.model_checkpoint.save_top_k=abc``, ``trainer.devices=[0]`` on a CPU) is a configuration error
    naming ``where``: one line, not a traceback. Only the errors a refused argument raises are converted; anything
    else (a bug in the class) keeps its traceback."""
    from hydra.utils import instantiate
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(root_cause(err), SkimError) or not isinstance(
            cause, (TypeError, ValueError, ImportError, MisconfigurationException)
        ):
            raise
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else "(no message)"
        raise ConfigError(f"{where}: {type(cause).__name__}: {text}") from err


def root_cause(err: BaseException) -> BaseException:
    """Unwrap Hydra's InstantiationException (and similar chains) down to a SkimError if there is one."""
    seen = err
    while seen is not None:
        if isinstance(seen, SkimError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return err


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5, check=False)
        if sha.returncode:
            return None
        return sha.stdout.strip()[:12] + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not inside a Hydra app (tests, notebooks)
        return []


def hydra_choices() -> dict[str, str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None and not k.startswith("hydra")}
    except Exception:  # noqa: BLE001
        return {}


def append_result(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one JSON line; a single small write in append mode, so concurrent jobs do not interleave rows."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, default=str, sort_keys=True) + "\n"
    with open(p, "a") as f:
        f.write(line)


def run_record(cfg: DictConfig, metrics: dict[str, Any], extra: dict[str, Any] | None = None, strategy=None) -> dict[str, Any]:
    """One result row; ``strategy`` (the module's) records the skim settings the metrics were measured with, which for
    a checkpoint are today's config defaults plus its run's overrides, not necessarily what it was trained with."""
    import dataclasses

    import lightning
    import torch
    import transformers

    return {
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "task_name": cfg.get("task_name"),
        "run_dir": cfg.paths.output_dir,
        "overrides": hydra_overrides(),
        "choices": hydra_choices(),
        "model": cfg.model.get("name"),
        "skim": cfg.skim.get("name"),
        "skim_config": dataclasses.asdict(strategy.cfg) if strategy is not None else None,
        "data": cfg.data.get("name"),
        "seed": cfg.get("seed"),
        "git_commit": git_commit(),
        "versions": {"torch": torch.__version__, "lightning": lightning.__version__, "transformers": transformers.__version__},
        "metrics": metrics,
        **(extra or {}),
    }


def write_json(path: str | os.PathLike, obj: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str, sort_keys=True))
    os.replace(tmp, p)


def write_report(out_dir: str | os.PathLike, name: str, record: dict[str, Any], markdown: str) -> None:
    """A diagnostic's ``<name>.json`` (the whole record) and ``<name>.md`` (its table) in the run directory; the table
    is printed too."""
    write_json(Path(out_dir) / f"{name}.json", record)
    (Path(out_dir) / f"{name}.md").write_text(markdown)
    print(markdown)


def task_wrapper(fn: Callable[[DictConfig], dict]) -> Callable[[DictConfig], dict]:
    """Run a task so that a failure is one clear line, a FAILED marker and a non-zero exit, and W&B always closes.

    A finished run is recognisable by its ``metrics.json``, written last; a failed or interrupted one has ``FAILED``
    instead, and no ``metrics.json`` or ``predictions.json`` that could pass for its final result.
    """

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> dict:
        out_dir = Path(cfg.paths.output_dir)
        (out_dir / "FAILED").unlink(missing_ok=True)  # a resume into the same directory starts unfailed
        try:
            return fn(cfg)
        except (SkimError, InstantiationException) as err:
            cause = root_cause(err)
            if not isinstance(cause, SkimError):
                raise
            msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            _mark_failed(out_dir, f"{type(cause).__name__}: {msg}")
            print(f"skim: error: {msg}", file=sys.stderr)
            if _in_multirun() and not isinstance(cause, RunInterrupted):
                # one failed job must not stop a sweep's other jobs; a signal stops the sweep
                log.error("job failed: %s", msg)
                return {"failed": msg}
            sys.exit(cause.exit_code)
        except BaseException:
            _mark_failed(out_dir, "crashed; see the log in this folder")
            log.exception("job crashed")  # into <task_name>.log: stderr alone is gone once the terminal is
            if _in_multirun():
                return {"failed": "crashed"}
            raise
        finally:
            _close_wandb()

    return wrapped


def run_cli(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` entry point so that a command line Hydra cannot compose into a config (an unknown group
    option or key, a value a typed schema refuses, bad override syntax) is one ``skim: error:`` line and exit 2, as any
    other bad input is; Hydra itself would print several lines and exit 1. Nothing is written: composition comes
    before a single run's directory (a sweep composes each job when it launches it: a value of a sweep list that does
    not compose stops the sweep there, after the jobs before it)."""
    # Hydra raises instead of reporting and exiting; a crash inside a run then shows its whole traceback
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except CompactHydraException as err:
        if isinstance(err, InstantiationException):  # raised inside a run, by skim's own code: not composition
            raise
        # the cause says what was wrong with the override (a schema's "Value 'abc' ... full_key: skim.tau")
        at = f"override {err.override!r}: " if isinstance(err, OverrideParseException) and err.override else ""
        text = one_line(f"{at}{err}: {err.__cause__ or ''}", 10_000).rstrip(": ").split(" Config search path:")[0]
        print(f"skim: error: {one_line(text, 600)}", file=sys.stderr)
        sys.exit(2)


def _mark_failed(out_dir: Path, reason: str) -> None:
    for name in RESULT_FILES:
        (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "FAILED").write_text(reason + "\n")


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


def _close_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def print_summary(title: str, metrics: dict[str, Any]) -> None:
    keys = [k for k in metrics if not k.startswith("val/skim/kept_layer")]
    parts = [f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}" for k in keys]
    kept = [metrics[k] for k in sorted(metrics, key=_layer_key) if k.startswith("val/skim/kept_layer")]
    print(f"[{title}] " + " ".join(parts))
    if kept:
        print(f"[{title}] kept ratio per layer: " + " ".join(f"{r:.3f}" for r in kept))


def _layer_key(k: str) -> tuple[int, str]:
    digits = "".join(c for c in k if c.isdigit())
    return (int(digits) if digits else -1, k)
