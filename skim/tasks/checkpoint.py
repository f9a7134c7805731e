"""Every checkpoint that enters skim comes through here: train resume (``ckpt_path``), ``model.init_checkpoint``, and
the checkpoints that ``skim.eval`` and ``skim.benchmark`` load.

Loading is always ``weights_only=True``, passed explicitly rather than left to torch's default (False before 2.6):
skim checkpoints hold tensors and plain containers only (configs are converted with ``_convert_: all``), so anything
the weights-only unpickler refuses is not a skim checkpoint and is never unpickled. Files are checked before data and
model are built, so a wrong path costs a second, not a featurised dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from skim.errors import ConfigError
from skim.tasks.backbone import length_groups_option

log = logging.getLogger(__name__)

# what Lightning writes for a full (resumable) checkpoint; a weights-only one has state_dict only
RESUME_KEYS = ("optimizer_states", "loops")


def read_checkpoint(path: str | Path, option: str) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (memory-mapped, weights-only), or one ConfigError line naming ``option``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{option} {p}: checkpoint file not found")
    try:
        ckpt = _load(p)
    except Exception as err:
        raise ConfigError(
            f"{option} {p}: not a skim checkpoint (unreadable, or holds objects other than tensors and plain containers, "
            f"which skim never unpickles: {_reason(err)})"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{option} {p}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def check_resumable(path: str | Path, option: str = "ckpt_path", skim: str | None = None) -> None:
    """Resume needs the optimiser and loop state, which weights-only checkpoints (``best``) do not hold, and the
    run's own strategy ``skim`` (another one's parameters and optimiser state do not match)."""
    ckpt = read_checkpoint(path, option)
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise ConfigError(
            f"{option} {path}: a weights-only checkpoint cannot resume training (no {', '.join(missing)}); resume from "
            "the run's checkpoints/last.ckpt, or start new weights from it with model.init_checkpoint=..."
        )
    saved = (ckpt.get("hyper_parameters", {}).get("skim") or {}).get("name")
    if skim is not None and saved is not None and saved != skim:
        raise ConfigError(
            f"{option} {path}: a skim={saved} run cannot resume as skim={skim}; start new weights from it with "
            "model.init_checkpoint=..., or evaluate it with skim.eval (skim=none scores its backbone alone)"
        )


def load_task_module(cfg: DictConfig, **kwargs: Any):
    """The task module saved at ``cfg.ckpt_path``, its skim strategy replaced by ``cfg.skim`` unless
    ``use_checkpoint_skim``, run with ``cfg.model.attn_implementation`` and ``cfg.model.length_groups`` (for ``skim.eval`` and ``skim.benchmark``);
    ``kwargs`` override other saved hyper-parameters."""
    from hydra.utils import get_class

    saved = read_checkpoint(cfg.ckpt_path, "ckpt_path").get("hyper_parameters", {}).get("skim") or {}
    cls = get_class(cfg.module._target_)
    if not cfg.get("use_checkpoint_skim", False):
        kwargs["skim"] = OmegaConf.to_container(cfg.skim, resolve=True)
        # a default changed since the run (Transkimmer's eval_decision), or an override given now (a threshold sweep)
        changed = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in kwargs["skim"].items() if k in saved and saved[k] != v]
        if changed and saved.get("name") == kwargs["skim"].get("name"):
            log.info("skim settings that differ from the checkpoint's run: %s", "; ".join(changed))
    try:
        module = cls.load_from_checkpoint(str(cfg.ckpt_path), map_location="cpu", weights_only=True, **kwargs)
    except ConfigError:  # the settings given now, not the checkpoint (skim.layer_thresholds of the wrong length)
        raise
    except Exception as err:
        raise ConfigError(f"ckpt_path {cfg.ckpt_path}: cannot load this checkpoint into {cls.__name__} ({_first_line(err)})") from err
    module.use_attn_implementation(cfg.model.get("attn_implementation", "auto"))
    module.encoder.length_groups = length_groups_option(cfg.model)  # how to run, not what was learnt
    return module


def run_module(cfg: DictConfig, **kwargs: Any):
    """The model a diagnostic measures: the trained ``cfg.ckpt_path``, else ``cfg.module`` built from the run's starting
    point (``model.init_checkpoint``, or the pretrained weights; the strategy's predictors fresh). ``kwargs`` go to
    the module's constructor when it is built (a checkpoint brings its own)."""
    from hydra.utils import instantiate

    if cfg.get("ckpt_path"):
        return load_task_module(cfg)
    module = instantiate(cfg.module, **kwargs)
    module.init_from_checkpoint()
    return module


def _load(path: Path) -> Any:
    try:
        # memory-mapped: checking a 300 MB checkpoint before the run reads almost none of it
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format, or not torch at all


def _reason(err: BaseException) -> str:
    """torch's message minus its advice to retry with ``weights_only=False``, which skim must never pass on."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    kept = [ln for ln in lines if not any(w in ln for w in ("weights_only", "Weights only load failed", "documentation of torch.load"))]
    return (kept[0] if kept else type(err).__name__)[:300]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]
