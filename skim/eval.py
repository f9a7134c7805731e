"""``python -m skim.eval ckpt_path=... [overrides]``: evaluate a checkpoint on the validation set of ``data``.

The architecture comes from the checkpoint. The ``skim`` config of this command decides how skimming runs at
evaluation (for example ``skim=blockskim skim.threshold=0.1`` re-thresholds a trained Block-Skim model); with
``use_checkpoint_skim=true`` the strategy saved in the checkpoint is used as it was trained.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import skim  # noqa: F401
from skim.errors import ConfigError
from skim.utils.config_store import register_configs
from skim.utils.run import append_result, instantiate_group, print_summary, run_record, task_wrapper, validate_config, write_json

log = logging.getLogger("skim.eval")
register_configs()


def load_module(cfg: DictConfig):
    import torch
    from hydra.utils import get_class

    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path {ckpt}: checkpoint file not found")
    cls = get_class(cfg.module._target_)
    kwargs = {} if cfg.get("use_checkpoint_skim", False) else {"skim": OmegaConf.to_container(cfg.skim, resolve=True)}
    kwargs["evaluation"] = OmegaConf.to_container(cfg.evaluation, resolve=True)
    kwargs["output_dir"] = cfg.paths.output_dir
    try:
        # weights_only: checkpoints hold plain containers only (configs are converted with _convert_: all)
        return cls.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True, **kwargs)
    except (RuntimeError, KeyError, EOFError, torch.serialization.pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"ckpt_path {ckpt}: cannot load this checkpoint into {cls.__name__} ({first[:300]})") from err


def evaluate(cfg: DictConfig) -> dict:
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    validate_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    module = load_module(cfg)
    datamodule = instantiate(cfg.data)
    loggers = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=loggers or False)
    trainer.validate(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")}
    data_info = datamodule.describe()
    record = run_record(cfg, metrics, {"data_info": data_info, "padding": data_info.get("padding"), "ckpt_path": cfg.ckpt_path})
    if metrics and trainer.is_global_zero:
        write_json(out_dir / "metrics.json", record)
        if cfg.get("results_file"):
            append_result(cfg.results_file, record)
    print_summary(f"eval {module.strategy.name}", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    metrics = task_wrapper(evaluate)(cfg)
    value = metrics.get(cfg.get("optimized_metric")) if metrics else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
