"""What every task LightningModule shares: the skim encoder, the optimiser recipe and the skim statistics."""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from transformers import get_scheduler

from skim.encoders.skim_encoder import SkimEncoder
from skim.errors import ConfigError, one_line
from skim.metrics.counts import SumVector
from skim.metrics.qa_postprocess import QAEvaluationConfig
from skim.state import EncoderOutput
from skim.strategies import build_strategy, strategy_class
from skim.tasks.backbone import ModelConfig, build_backbone, length_groups_option, resolve_attn_implementation
from skim.tasks.checkpoint import read_checkpoint
from skim.utils.options import check_trainer_options, checked, is_instance
from skim.utils.run import write_json

#: the weights of skim.train's final evaluation: the best validated checkpoint, the last weights, or none (the fit's
#: last validation)
FINAL_EVAL = ("best", "last", "none")
#: transformers schedulers that step per optimiser step from (warm-up steps, total steps) alone
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt")


@dataclass
class OptimConfig:
    """``optim.*``: AdamW (no decay on biases and norms) with a transformers scheduler stepped per optimiser step."""

    lr: float = 3e-5
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    #: the scheduler's warm-up, as a share of the fit's optimiser steps
    warmup_ratio: float = 0.0
    #: one of :data:`SCHEDULERS`, or none
    scheduler: str | None = "linear"
    #: learning rate of the strategy's own parameters (predictors, thresholds), which start from scratch; None: ``lr``
    skim_lr: float | None = None


def check_optim(options: dict[str, Any]) -> dict[str, Any]:
    """``optim.*`` over :class:`OptimConfig`'s defaults; an unknown option, a wrong type or a value out of range is a
    ConfigError naming it (``optim.lr=abc`` failed inside the scheduler, after the data was tokenised)."""
    cfg = checked(options, OptimConfig, "optim")
    for name in ("lr", "adam_eps"):
        if not 0 < cfg[name] < math.inf:
            raise ConfigError(f"optim.{name} must be a number > 0, got {cfg[name]!r}")
    if not 0 <= cfg["weight_decay"] < math.inf:
        raise ConfigError(f"optim.weight_decay must be a number >= 0, got {cfg['weight_decay']!r}")
    if not 0 <= cfg["warmup_ratio"] <= 1:
        raise ConfigError(f"optim.warmup_ratio must be in [0, 1] (a share of the steps), got {cfg['warmup_ratio']!r}")
    if cfg["scheduler"] not in (None, "none", *SCHEDULERS):
        raise ConfigError(f"optim.scheduler must be none or one of transformers' {', '.join(SCHEDULERS)}; got {cfg['scheduler']!r}")
    if cfg["skim_lr"] is not None and not 0 < cfg["skim_lr"] < math.inf:
        raise ConfigError(f"optim.skim_lr must be null (optim.lr) or a learning rate > 0, got {cfg['skim_lr']!r}")
    return cfg


def validate_config(cfg: DictConfig) -> None:
    """Cheap checks of a run config before anything heavy is built (data, backbone): incompatible combinations and
    bad values fail with one clear message."""
    cls = strategy_class(cfg.skim.name)
    cls.check_compatible(cfg.data.task, cfg.model.get("attn_implementation", "auto"))
    check_targets(cfg)  # after the task check: module._target_ is resolved from data.task
    checked(_resolved_options(cfg.model), ModelConfig, "model")
    if cfg.get("optim") is not None:
        check_optim(_resolved_options(cfg.optim))
    if cfg.data.task == "qa" and cfg.get("evaluation") is not None:
        checked(_resolved_options(cfg.evaluation), QAEvaluationConfig, "evaluation")
    if cfg.get("seed") is not None and not is_instance(cfg.seed, int):  # null: Lightning draws one
        raise ConfigError(f"seed must be an integer or null, got {cfg.seed!r} ({type(cfg.seed).__name__})")
    if cfg.get("final_eval", "none") not in FINAL_EVAL:
        raise ConfigError(f"final_eval must be one of {', '.join(FINAL_EVAL)}, got {cfg.final_eval!r}")
    if cfg.get("trainer") is not None:
        check_trainer_options(_resolved_options(cfg.trainer))


def check_targets(cfg: DictConfig) -> None:
    """``data._target_`` and ``module._target_`` (those the config has) name a skim DataModule and a task module of the
    same task, and ``module.*`` holds only options the task module takes (a typo, another class or an unknown key
    would fail inside Hydra or Lightning with a traceback)."""
    from hydra._internal.utils import _locate  # hydra.utils.get_class, without its log line of the same error

    from skim.data.base import SkimDataModule

    classes = {}
    for group, base in (("data", SkimDataModule), ("module", SkimTaskModule)):
        if cfg.get(group) is None:
            continue
        target = cfg[group].get("_target_")
        try:
            classes[group] = cls = _locate(target) if isinstance(target, str) else None
        except (ImportError, ValueError) as err:
            raise ConfigError(f"{group}._target_={target!r} cannot be imported ({one_line(err.__cause__ or err)})") from err
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(f"{group}._target_={target!r} is not a {base.__name__} (the {group} config's class)")
    if len(classes) == 2 and classes["data"].task != classes["module"].task:
        raise ConfigError(f"module._target_={cfg.module._target_!r} serves task {classes['module'].task!r}, but "
                          f"data._target_={cfg.data._target_!r} serves {classes['data'].task!r}")  # fmt: skip
    if "module" in classes:
        known: set[str] = set()
        for cls in classes["module"].__mro__:  # each __init__ that passes **options on, up to SkimTaskModule's
            params = inspect.signature(cls.__init__).parameters.values()
            known |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}
            if cls is SkimTaskModule or all(p.kind != p.VAR_KEYWORD for p in params):
                break
        unknown = [k for k in cfg.module if not k.startswith("_") and k not in known]  # _target_ & co. are Hydra's
        if unknown:
            raise ConfigError(f"unknown module option(s) {', '.join(map(repr, unknown))} for "
                              f"{classes['module'].__name__} (known: {', '.join(sorted(known))})")  # fmt: skip


def check_evaluates(cfg: DictConfig, why: str) -> None:
    """``trainer.limit_val_batches=0`` makes Lightning skip every validation, ``trainer.validate`` included: a run asked
    to evaluate would end with no metric, no metrics.json and no word of why."""
    limit = (cfg.get("trainer") or {}).get("limit_val_batches")
    if limit is not None and not isinstance(limit, bool) and limit == 0:
        raise ConfigError(f"trainer.limit_val_batches={limit} evaluates nothing, but {why}")


def _resolved_options(node: DictConfig) -> dict[str, Any]:
    """The options of ``node`` as plain values; one that cannot be resolved here (a ``${hydra:...}`` outside a Hydra
    job) is left out."""
    options = {}
    for key in node:
        with contextlib.suppress(OmegaConfBaseException, ValueError):
            options[str(key)] = _plain(node[key])
    return options


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


class SkimTaskModule(pl.LightningModule):
    task: str = "?"

    def __init__(
        self,
        model: dict,
        skim: dict | None = None,
        optim: dict | None = None,
        evaluation: dict | None = None,
        output_dir: str | None = None,
        add_pooling_layer: bool = False,
    ):
        """``model``: the backbone config (conf/model); ``skim``: the strategy's (conf/skim); ``optim``: lr, weight
        decay, warm-up, scheduler; ``evaluation``: the task's evaluation settings (conf/train.yaml); ``output_dir``:
        where evaluation writes its files (default: the trainer's root directory)."""
        super().__init__()
        # the arguments of every __init__ up to the task module's own (Lightning collects them along the inheritance
        # chain), which load_from_checkpoint passes back; skim.train logs the whole config once (choices, overrides)
        self.save_hyperparameters(logger=False, ignore=["add_pooling_layer"])
        self.output_dir = output_dir
        self._fit_steps = 0  # optimiser steps of the current fit (set when it starts)
        model, skim, optim = _plain(model), _plain(skim) or {"name": "none"}, _plain(optim) or {}
        self.optim_cfg = check_optim(optim)
        strategy = build_strategy(skim)
        strategy.check_compatible(self.task, model.get("attn_implementation", "auto"))
        impl = resolve_attn_implementation(
            model.get("attn_implementation", "auto"), strategy.requires_attention_probs, strategy.attn_implementation
        )
        backbone = build_backbone(model, attn_implementation=impl, add_pooling_layer=add_pooling_layer)
        # from_pretrained returns modules in eval mode, and Lightning keeps each module's mode: training must see dropout
        backbone.train()
        self.encoder = SkimEncoder(backbone, strategy)
        # prune-mode inference on groups of examples of similar length (exact; see SkimEncoder.length_groups)
        self.encoder.length_groups = length_groups_option(model)
        self._model_cfg = model
        self.strategy_stats = SumVector(max(strategy.eval_stat_size(), 1))

    def init_from_checkpoint(self) -> None:
        """``model.init_checkpoint``: start from the weights of another skim run (e.g. the dense model, as a skimming
        model starts from a pretrained backbone); the strategy's predictors, absent there, keep their init."""
        path = self._model_cfg.get("init_checkpoint")
        if not path or getattr(self, "_initialised_from", None) == path:
            return
        state = read_checkpoint(path, "model.init_checkpoint")["state_dict"]
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("encoder.strategy.")]
        if missing or unexpected:
            raise ConfigError(
                f"model.init_checkpoint {path} does not match this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        self._initialised_from = path

    def use_attn_implementation(self, requested: str) -> None:
        """Run a loaded model with another attention implementation (e.g. ``eager`` as the reference), checked as at
        construction; ``auto`` keeps what the model was built with."""
        if requested == "auto":
            return
        self.strategy.check_compatible(self.task, requested)
        impl = resolve_attn_implementation(requested, self.strategy.requires_attention_probs, self.strategy.attn_implementation)
        self.encoder.backbone.config._attn_implementation = impl

    @property
    def strategy(self):
        return self.encoder.strategy

    def mode(self) -> str:
        return self.strategy.cfg.train_mode if self.training else self.strategy.cfg.eval_mode

    def encode(self, batch: dict[str, torch.Tensor], mode: str | None = None) -> EncoderOutput:
        return self.encoder(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("token_type_ids"),
            mode=mode or self.mode(),
            protect_mask=batch.get("protect_mask"),
        )

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # lets a resumable training loader record how far the epoch got (skim.data.resumable); counted at the start
        # so that a checkpoint saved at the end of this step (callbacks run before the module) includes it
        loader = self.trainer.train_dataloader
        if hasattr(loader, "note_consumed"):
            loader.note_consumed()
        self.strategy.training_progress = min(self.trainer.global_step / self._fit_steps, 1.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # dropout / Gumbel noise continue where they were after a resume
        checkpoint["skim_rng"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("skim_rng")
        if not self.strategy.state_dict():
            # a strategy without weights (skim.eval skim=none|random|truncate on a skimming run: its backbone alone, or
            # at a budget) leaves the run's predictors unused; any other strategy must match them exactly
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith("encoder.strategy.")]:
                del state[key]

    def on_train_start(self) -> None:
        state = getattr(self, "_rng_to_restore", None)
        if state is not None:
            torch.set_rng_state(state)
            self._rng_to_restore = None
        if self.optim_cfg["scheduler"] in (None, "none"):  # configure_optimizers counted them for the scheduler
            self._fit_steps = self.total_training_steps()

    def on_train_end(self) -> None:
        self.strategy.training_progress = 1.0

    def total_training_steps(self) -> int:
        """Optimizer steps of the whole fit, computed from the datamodule's loader.

        Not ``trainer.estimated_stepping_batches``: that builds the fit loop's training data before a checkpoint's
        loop state is restored, so a stateful loader would never get its mid-epoch position back.
        """
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0 and (trainer.max_epochs is None or trainer.max_epochs < 0):
            return trainer.max_steps
        try:
            batches = len(trainer.datamodule.train_dataloader())
        except (AttributeError, TypeError):
            return max(int(trainer.estimated_stepping_batches), 1)
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            batches = min(batches, limit)
        elif limit is not None:
            batches = int(batches * limit)
        if trainer.overfit_batches:
            batches = int(trainer.overfit_batches) if isinstance(trainer.overfit_batches, int) else max(int(batches * trainer.overfit_batches), 1)
        per_epoch = -(-batches // trainer.accumulate_grad_batches)
        total = per_epoch * max(trainer.max_epochs or 1, 1)
        if trainer.max_steps and trainer.max_steps > 0:
            total = min(total, trainer.max_steps)
        if trainer.fast_dev_run:
            total = int(trainer.fast_dev_run)
        return max(total, 1)

    def log_training_step(self, terms: dict[str, torch.Tensor], out: EncoderOutput, batch: dict[str, torch.Tensor]) -> None:
        """The loss terms, the kept ratio and the strategy's own training diagnostics (``train/skim/*``)."""
        bs = batch["input_ids"].shape[0]
        for k, v in terms.items():
            self.log(f"train/{k}", v, prog_bar=k == "loss", batch_size=bs)
        if self.strategy.name != "none":
            kept = out.kept_per_layer.float().sum(1) / out.real_tokens.sum().clamp_min(1)
            self.log("train/skim/kept_mean", kept.mean(), batch_size=bs)
            with torch.no_grad():
                diagnostics = self.strategy.train_diagnostics(out, batch)
            for k, v in diagnostics.items():
                self.log(f"train/skim/{k}", v, batch_size=bs)

    # ---- skim statistics ---------------------------------------------------------------------------------
    def step_skim_outputs(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Per-example token counts for the skim-ratio and FLOPs callbacks (returned by validation_step)."""
        stats = self.strategy.eval_stats(out, batch)
        if stats is not None:
            self.strategy_stats.update(stats)
        return {
            "kept": out.kept_per_layer.detach(),
            "special": out.special_per_layer.detach(),
            "special_total": out.special_tokens.detach(),
            "real": out.real_tokens.detach(),
            "pred_tokens": self.strategy.predictor_tokens(out).detach(),
            "final": out.final_keep.sum(1).detach(),
            "padded_len": int(out.final_keep.shape[1]),
            # which tokens entered each layer ([layers, B, L]), when the encoder records it (skimmed_tokens callback)
            "alive": out.alive_per_layer,
        }

    @property
    def files_dir(self) -> str:
        """Where evaluation writes its files: ``output_dir``, else the trainer's root directory."""
        return self.output_dir or self.trainer.default_root_dir

    def compute_skim_stats(self) -> dict[str, float]:
        """Strategy-specific validation statistics (e.g. Block-Skim's block precision/recall), summed over ranks."""
        res: dict[str, float] = {}
        if self.strategy.eval_stat_size():
            totals = self.strategy_stats.compute()
            res.update(self.strategy.format_eval_stats(totals))
            report = self.strategy.eval_report(totals)
            if report and not self.trainer.sanity_checking and self.trainer.is_global_zero:
                write_json(os.path.join(self.files_dir, "skim_stats.json"), report)
        self.strategy_stats.reset()
        return res

    # ---- optimisation ------------------------------------------------------------------------------------
    def configure_optimizers(self):
        """AdamW over four groups: backbone / strategy parameters, each with and without weight decay. The strategy's
        own parameters (predictors, thresholds) learn at ``optim.skim_lr`` (null: ``optim.lr``): they start from
        scratch while the backbone is already trained, and at a fine-tuning rate Adam moves each of their weights by
        about ``lr`` a step. The task heads (span and classifier layers) stay at ``lr``. The scheduler scales every
        group's rate by the same factor. Without ``skim_lr`` the groups are the two of earlier runs (their checkpoints
        resume); a run resumes with the groups it was started with (setting or unsetting ``skim_lr`` on resume
        changes their number, which the saved optimiser state refuses, and a new value is overridden by the saved one,
        as for ``lr``)."""
        cfg = self.optim_cfg
        skim_lr = cfg.get("skim_lr")
        groups = {
            (own, decay): {"params": [], "weight_decay": cfg["weight_decay"] if decay else 0.0, "lr": skim_lr if own else cfg["lr"]}
            for own in (False, True) for decay in (True, False)
        }  # fmt: skip
        own = {id(p) for p in self.strategy.parameters()} if skim_lr is not None else set()
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias")
            groups[id(p) in own, not no_decay]["params"].append(p)
        groups = [g for g in groups.values() if g["params"]]
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], eps=cfg["adam_eps"])
        name = cfg["scheduler"]
        if name in (None, "none"):
            return opt
        # the fit's length, for the scheduler and for the strategies' schedules (``training_progress``)
        self._fit_steps = total = self.total_training_steps()
        sched = get_scheduler(name, opt, num_warmup_steps=int(cfg["warmup_ratio"] * total), num_training_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
