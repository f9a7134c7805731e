"""``python -m skim.train [overrides]``: fine-tune and evaluate a (skimming) encoder; everything comes from config."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import skim  # noqa: F401  (registers resolvers)
from skim.errors import RunInterrupted
from skim.loggers import CSVLogger
from skim.tasks.base_module import check_evaluates, validate_config
from skim.tasks.checkpoint import check_resumable, read_checkpoint
from skim.utils.config_store import register_configs
from skim.utils.resolvers import monitor_mode
from skim.utils.run import (
    append_result,
    hydra_choices,
    hydra_overrides,
    instantiate_group,
    instantiate_option,
    print_summary,
    run_cli,
    run_record,
    task_wrapper,
    write_json,
)

log = logging.getLogger("skim.train")
register_configs()


def train(cfg: DictConfig) -> dict:
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    validate_config(cfg)
    final = cfg.get("final_eval", "best")
    if final != "none" and not cfg.trainer.get("fast_dev_run"):  # a fast dev run skips the final evaluation anyway
        check_evaluates(cfg, f"final_eval={final} asks for an evaluation (final_eval=none: train only)")
    out_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(cfg, out_dir)
    if cfg.model.get("init_checkpoint"):
        read_checkpoint(cfg.model.init_checkpoint, "model.init_checkpoint")
    pl.seed_everything(cfg.seed, workers=True)

    reuse_wandb_run(cfg)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.module, output_dir=str(out_dir))
    callbacks = instantiate_group(cfg, "callbacks")
    loggers = instantiate_group(cfg, "logger")
    # a run resumed into its own directory continues its metrics.csv (not one that only evaluates, nor one that starts
    # from another run's checkpoint in a directory that happens to hold a log)
    resuming = bool(ckpt_path) and cfg.get("train", True) and Path(ckpt_path).resolve().is_relative_to(out_dir.resolve())
    for lg in loggers:
        if isinstance(lg, CSVLogger):
            lg.resuming = resuming
    trainer = instantiate_option(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        # the one logged config: the composed tree plus the group choices and overrides that dashboards filter on
        lg.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "choices": hydra_choices(), "overrides": hydra_overrides()})
        run_id = getattr(getattr(lg, "experiment", None), "id", None)
        if run_id and type(lg).__name__ == "WandbLogger":
            (out_dir / "wandb_run_id").write_text(str(run_id))

    final_weights: dict = {}
    try:
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if final != "none" and not trainer.fast_dev_run:
            final_weights = final_checkpoint(trainer, final)
            trainer.validate(module, datamodule=datamodule, ckpt_path=final_weights.get("path"), weights_only=True)
        else:  # the metrics are those of the fit's last validation
            final_weights = {"weights": "the fit's last validation"}
    except SIGTERMException as err:
        raise RunInterrupted(f"interrupted by SIGTERM at step {trainer.global_step}; {resume_hint(trainer)}") from err

    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")}
    add_objective(cfg, metrics)
    data_info = datamodule.describe() if hasattr(datamodule, "describe") else {}
    extra = {"data_info": data_info, "padding": data_info.get("padding"), "timing": fit_timing(trainer), "final_eval": final_weights}
    record = run_record(cfg, metrics, extra, module.strategy)
    if metrics and not trainer.fast_dev_run:
        if trainer.is_global_zero:
            write_json(out_dir / "metrics.json", record)
            if cfg.get("results_file"):
                append_result(cfg.results_file, record)
        print_summary(f"{cfg.task_name} {cfg.skim.name}", metrics)
    elif not metrics and not trainer.fast_dev_run:
        log.warning("no validation ran, so no metrics.json and no results row were written")
    return metrics


def resume_checkpoint(cfg: DictConfig, out_dir: Path) -> str | None:
    """``ckpt_path`` to resume from ("last": this run directory's), checked before data and model are built."""
    path = cfg.get("ckpt_path")
    if path == "last":
        path = str(out_dir / "checkpoints" / "last.ckpt")
    if path:
        check_resumable(path, skim=cfg.skim.name)
    return path


def final_checkpoint(trainer, final: str) -> dict:
    """The weights of the final evaluation: the best *validated* ones (the best-model checkpoint is written only after
    a validation, with that validation's score) or the weights in memory; recorded in metrics.json as ``final_eval``."""
    best = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)
    if final != "best" or best is None or not best.best_model_path or not Path(best.best_model_path).is_file():
        if final == "best":
            log.warning("final_eval=best but no best checkpoint was saved: evaluating the last weights")
        return {"weights": "last", "step": trainer.global_step}
    saved = read_checkpoint(best.best_model_path, "final_eval=best")
    score = best.best_model_score
    return {
        "weights": "best",
        "path": best.best_model_path,
        "step": saved.get("global_step"),
        "monitor": best.monitor,
        "score": float(score) if score is not None else None,
    }


def resume_hint(trainer) -> str:
    last = next((Path(c.last_model_path) for c in trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")), None)
    if last is not None and last.is_file():
        return f"resume with ckpt_path={last}"
    return "no resumable checkpoint was saved (callbacks.last_checkpoint); rerun from the start"


def fit_timing(trainer) -> dict[str, float]:
    """Seconds of the fit (its validations included; accumulated over resumes) and of the last validation."""
    from lightning.pytorch.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is None or timer.start_time("train") is None:
        return {}
    out = {"fit_s": round(timer.time_elapsed("train"), 1)}
    if timer.start_time("validate") is not None:
        out["last_validation_s"] = round(timer.time_elapsed("validate"), 1)
    return out


def reuse_wandb_run(cfg: DictConfig) -> None:
    """Resuming from ``<run>/checkpoints/*.ckpt`` continues that run's W&B run (its id is in ``<run>/wandb_run_id``)."""
    from omegaconf import open_dict

    ckpt, wandb_cfg = cfg.get("ckpt_path"), (cfg.get("logger") or {}).get("wandb")
    if not ckpt or ckpt == "last" or wandb_cfg is None or wandb_cfg.get("id"):
        return
    saved = Path(ckpt).resolve().parent.parent / "wandb_run_id"
    if saved.is_file():
        with open_dict(cfg):
            cfg.logger.wandb.id = saved.read_text().strip()
            cfg.logger.wandb.resume = "allow"
        log.info("resuming W&B run %s", cfg.logger.wandb.id)


def add_objective(cfg: DictConfig, metrics: dict) -> None:
    """``val/objective`` = metric - flops_penalty x (skim GFLOPs / dense GFLOPs), for accuracy-vs-cost searches that
    maximise it; a loss enters negated (-loss - penalty x ratio), so that maximising still lowers it."""
    obj = cfg.get("objective")
    if not obj or not metrics or obj.metric not in metrics:
        return
    ratio = metrics.get("val/flops/skim_gflops", 1.0) / max(metrics.get("val/flops/dense_gflops", 1.0), 1e-12)
    sign = -1.0 if monitor_mode(obj.metric) == "min" else 1.0
    metrics["val/objective"] = sign * metrics[obj.metric] - float(obj.flops_penalty) * ratio


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = task_wrapper(train)(cfg)
    value = metrics.get(cfg.get("optimized_metric")) if metrics else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    run_cli(main)
