"""Compose the real Hydra config and run the real entry-point functions in-process (no mocks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[2]
CONF = str(ROOT / "conf")

# a fast dev run on the synthetic sets generated at their smallest: such runs check the plumbing, not learning
FAST_DEV = [
    "debug=fdr",
    "data.batch_size=4",
    "data.eval_batch_size=4",
    "data.max_train_samples=8",
    "data.max_eval_samples=8",
    "data.synthetic.train_size=16",
    "data.synthetic.val_size=8",
    "logger=csv",
]


def compose_cfg(overrides: list[str], config_name: str = "train", output_dir: Path | None = None) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            del cfg["hydra"]
    return cfg


def run_cli(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
