"""``python -m skim.eval ckpt_path=... [overrides]``: evaluate a checkpoint on the validation set of ``data``.

When the checkpoint lies in a skim run directory (``<run>/checkpoints/*.ckpt`` next to ``<run>/.hydra``), the run's
own command-line overrides are applied first, so ``python -m skim.eval ckpt_path=<run>/checkpoints/last.ckpt``
evaluates with the training run's model, skim and data configs; overrides given here win (for example
``skim.threshold=0.1`` or ``data.eval_batch_size=128``). The architecture comes from the checkpoint; the ``skim``
config decides how skimming runs at evaluation (``use_checkpoint_skim=true``: exactly as saved).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import skim  # noqa: F401
from skim.errors import ConfigError
from skim.tasks.base_module import check_evaluates, validate_config
from skim.tasks.checkpoint import load_task_module
from skim.utils.config_store import register_configs
from skim.utils.run import (
    append_result,
    instantiate_group,
    instantiate_option,
    print_summary,
    run_cli,
    run_record,
    task_wrapper,
    write_json,
)

log = logging.getLogger("skim.eval")
register_configs()


def evaluate(cfg: DictConfig) -> dict:
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    validate_config(cfg)
    check_evaluates(cfg, "skim.eval is an evaluation")
    pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path is required: python -m skim.eval ckpt_path=<run>/checkpoints/last.ckpt [overrides]")
    module = load_task_module(
        cfg, evaluation=OmegaConf.to_container(cfg.evaluation, resolve=True), output_dir=cfg.paths.output_dir
    )
    datamodule = instantiate(cfg.data)
    loggers = instantiate_group(cfg, "logger")
    trainer = instantiate_option(cfg.trainer, "trainer", callbacks=instantiate_group(cfg, "callbacks"), logger=loggers or False)
    trainer.validate(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")}
    data_info = datamodule.describe()
    record = run_record(cfg, metrics, {"data_info": data_info, "padding": data_info.get("padding"), "ckpt_path": cfg.ckpt_path}, module.strategy)
    if metrics and trainer.is_global_zero:
        write_json(out_dir / "metrics.json", record)
        if cfg.get("results_file"):
            append_result(cfg.results_file, record)
    print_summary(f"eval {module.strategy.name}", metrics)
    return metrics


# keys of a training run's overrides that mean nothing (or something else) to an evaluation. task_name carries over:
# dropped, an experiment's own task_name came back with the experiment and named the evaluation of a
# ``task_name=X`` run after another run in results rows and reports. optim: the optimiser is not built here, and the
# entry points that take these overrides do not all have every optim key (optim.skim_lr failed to compose)
_TRAIN_ONLY = {"train", "final_eval", "ckpt_path", "hparams_search", "callbacks", "objective", "optimized_metric", "optim"}
# keys that stand in for each other: one given now drops the run's other (Block-Skim's per-layer thresholds win over
# the single one, so a run's saved layer_thresholds would silently void a threshold given now)
_ALTERNATIVES = {"skim.threshold": "skim.layer_thresholds", "skim.layer_thresholds": "skim.threshold"}


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def run_overrides_for(argv: list[str]) -> list[str]:
    """The saved overrides of the run that produced ``ckpt_path`` (if any), minus training-only and Hydra keys and
    minus the keys given on this command line."""
    import yaml

    ckpt = next((a.split("=", 1)[1] for a in argv if _key(a) == "ckpt_path" and "=" in a), None)
    if not ckpt:
        return []
    saved = Path(ckpt).resolve().parent.parent / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return []
    given = {_key(a) for a in argv if "=" in a}
    out = []
    for o in yaml.safe_load(saved.read_text()) or []:
        k = _key(o)
        # a group chosen here (skim=none) also drops the run's settings inside that group (skim.threshold=...)
        replaced = any(k.startswith(g + ".") for g in given)
        if k in given or replaced or _ALTERNATIVES.get(k) in given or k.split(".")[0] in _TRAIN_ONLY or k.startswith(("hydra", "trainer")):
            continue
        out.append(o)
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    metrics = task_wrapper(evaluate)(cfg)
    value = metrics.get(cfg.get("optimized_metric")) if metrics else None
    return float(value) if value is not None else None


def with_run_overrides(argv: list[str], prog: str) -> list[str]:
    """``argv`` with the saved overrides of the checkpoint's run put before the first override given (Hydra's parser
    takes overrides as one positional list: they must not be split by flags such as ``-m``)."""
    extra = run_overrides_for(argv)
    if not extra:
        return argv
    print(f"{prog}: using the training run's overrides: " + " ".join(extra), file=sys.stderr)
    at = next((i for i, a in enumerate(argv) if "=" in a and not a.startswith("-")), len(argv))
    return [*argv[:at], *extra, *argv[at:]]


if __name__ == "__main__":
    sys.argv[1:] = with_run_overrides(sys.argv[1:], "skim.eval")
    run_cli(main)
