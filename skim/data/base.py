"""What every task DataModule shares: options, the tokenizer, loading, featurisation, collation, loaders, describe.

A task module (``qa_datamodule``, ``cls_datamodule``) adds only what differs: its options, ``load`` (one split of
raw data in its schema, read with ``source_options``), ``featurize`` (a batched ``Dataset.map`` function) with
``featurize_options``, ``write_synthetic`` (skim's generated set), the ``scalar_columns`` it feeds and what evaluation
keeps of the examples (``keep_eval_examples``). ``Dataset.map`` caches the features under the fingerprint of the raw
split (the files, their size and modification time: ``sources.load_rows``), the subset, the featuriser, the tokenizer
and every option; ``cache_hits`` records per role (``"train"`` / ``"validation"``) whether that cache answered.
"""

from __future__ import annotations

import functools
import random
import time
import typing
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import pyarrow.compute as pc
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from skim.data.resumable import DistributedGroupedSampler, ResumableDataLoader, training_seed
from skim.errors import ConfigError, one_line
from skim.utils import options as option_checks
from skim.utils.resolvers import skim_root

PADDING_POLICIES = ("dynamic", "max_length")
# the smallest value of each numeric option (a zero batch or sample count, a negative stride, would fail later, far
# from the option, or mean something else)
MINIMUM = dict.fromkeys(("max_seq_length", "batch_size", "eval_batch_size", "max_train_samples", "max_eval_samples",
                         "max_query_length", "num_proc"), 1) | dict.fromkeys(("num_workers", "doc_stride", "transkimmer_coefficient"), 0)  # fmt: skip
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "protect_mask")


def build_tokenizer(name_or_path: str):
    """The fast tokenizer of ``model.tokenizer`` (a Hub id or a local folder)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"could not load tokenizer {name_or_path!r} ({first}). Offline? Point model.tokenizer at a local folder"
        ) from err
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"tokenizer {name_or_path!r} is not a fast tokenizer; extractive QA needs offset mappings")
    return tok


def collate(
    features: list[dict[str, Any]], *, scalars: dict[str, torch.dtype], pad_token_id: int = 0, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad the token columns to the longest feature of the batch (dynamic padding) or to ``pad_to``; ``scalars``
    are the per-feature columns (labels, indices) and their dtypes."""
    width = pad_to or max(len(f["input_ids"]) for f in features)
    batch = {
        key: torch.tensor(
            [list(f[key]) + [pad_token_id if key == "input_ids" else 0] * (width - len(f[key])) for f in features]
        )
        for key in MODEL_COLUMNS
    }
    return batch | {key: torch.tensor([f[key] for f in features], dtype=dtype) for key, dtype in scalars.items()}


class SkimDataModule(pl.LightningDataModule):
    task: str = ""
    # per-feature columns beside MODEL_COLUMNS that the loaders feed, and their dtypes
    scalar_columns: typing.ClassVar[dict[str, torch.dtype]] = {}
    # max_*_samples: None takes the first rows; a seed takes a pseudo-random subset in file order (for files sorted by label)
    subset_seed: int | None = None

    def __init__(
        self,
        *,
        tokenizer: str,
        task: str,
        name: str,
        monitor: str | None = None,
        hub_name: str | None = None,
        hub_config: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        train_split: str = "train",
        validation_split: str = "validation",
        max_seq_length: int = 128,
        padding: str = "dynamic",
        group_by_length: bool = False,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        num_proc: int | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        cache_dir: str | None = None,
        synthetic: dict | None = None,
        transkimmer_coefficient: float = 0.5,
        **unknown: Any,
    ):
        super().__init__()
        if unknown:  # a typo in a data YAML or on the command line (+data.max_train_sample=...)
            raise ConfigError(f"unknown data option(s) {', '.join(map(repr, unknown))} for {type(self).__name__}")
        self.check_types(locals(), SkimDataModule)
        if task != self.task:
            raise ConfigError(f"{type(self).__name__} serves data.task={self.task}, got data.task={task!r}")
        if padding not in PADDING_POLICIES:
            raise ConfigError(f"data.padding must be one of {PADDING_POLICIES}, got {padding!r}")
        if cache_dir is not None:  # datasets would fail inside the first load, blaming the data file
            found = next(p for p in (Path(cache_dir).absolute(), *Path(cache_dir).absolute().parents) if p.exists())
            if not found.is_dir():
                raise ConfigError(f"data.cache_dir={cache_dir}: {found} is a file, not a folder")
        if group_by_length and padding != "dynamic":
            raise ConfigError("data.group_by_length=true groups features to pad less: it needs data.padding=dynamic")
        self.tokenizer_name, self.name, self.monitor = tokenizer, name, monitor
        self.hub_name, self.hub_config, self.cache_dir = hub_name, hub_config, cache_dir
        self.sources = {"train": (train_file, train_split), "validation": (validation_file, validation_split)}
        self.limits = {"train": max_train_samples, "validation": max_eval_samples}
        self.max_seq_length, self.padding, self.group_by_length = max_seq_length, padding, group_by_length
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.num_proc = num_proc
        self.synthetic = dict(synthetic) if synthetic else None
        # read by conf/skim/transkimmer.yaml: the skim-loss coefficient the paper's scripts use for this data set
        self.transkimmer_coefficient = transkimmer_coefficient
        self._tokenizer = None
        self.train_features: datasets.Dataset | None = None
        self.eval_dataset: datasets.Dataset | None = None
        self.eval_split_examples: int | None = None
        self.cache_hits: dict[str, bool] = {}

    @staticmethod
    def check_types(options: dict[str, Any], target: Any, prefix: str = "data") -> None:
        """Each argument of ``target`` (a class or a function) against its annotation and :data:`MINIMUM`, before
        any data is read."""
        option_checks.check_types(options, target, prefix, MINIMUM)

    def check_monitor(self, allowed: list[str]) -> None:
        """``data.monitor`` (the best checkpoint's metric; the first allowed one if unset) is a metric the task logs:
        otherwise the run would stop only after its first epoch, when the checkpoint callback looks for it."""
        self.monitor = self.monitor or allowed[0]
        if self.monitor not in allowed:
            raise ConfigError(
                f"data.monitor={self.monitor!r} is not a metric of data set {self.name} (one of: {', '.join(allowed)})"
            )

    def featurize_options(self) -> dict[str, Any]:
        return {"max_seq_length": self.max_seq_length, "pad_to_max_length": self.padding == "max_length"}

    def keep_eval_examples(self, examples: datasets.Dataset) -> None:
        self.eval_examples = examples

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            tok = build_tokenizer(self.tokenizer_name)
            limit = getattr(tok, "model_max_length", None)
            if isinstance(limit, int) and limit < 100_000 and self.max_seq_length > limit:
                raise ConfigError(
                    f"data.max_seq_length={self.max_seq_length} exceeds the tokenizer's model_max_length ({limit})"
                )
            self._tokenizer = tok
        return self._tokenizer

    def prepare_data(self) -> None:
        if self.synthetic:  # skim's generated data sets (offline quickstart)
            options = dict(self.synthetic)
            out_dir = options.pop("dir", None)
            if not isinstance(out_dir, str):
                raise ConfigError(f"data.synthetic.dir must be the folder of the generated files, got {out_dir!r}")
            self.check_types(options, self.write_synthetic, "data.synthetic")
            try:
                self.write_synthetic(out_dir, **options)
            except OSError as err:
                raise ConfigError(f"data.synthetic.dir={out_dir}: {one_line(err)}") from err
            except (TypeError, ValueError) as err:  # an option the generator does not take, a value out of range
                raise ConfigError(f"data.synthetic: {err}") from err

    def source_options(self, option: str) -> dict[str, Any]:
        """How ``load`` reads: the Hub dataset, the cache, and what offline users can switch to (``option``, and
        ``data=<name>_local`` where conf/data has it: the copies in ../shared/data)."""
        local = f"{self.name}_local"
        has_local = (Path(skim_root()) / "conf" / "data" / f"{local}.yaml").exists()
        return {"hub_name": self.hub_name, "hub_config": self.hub_config, "cache_dir": self.cache_dir, "option": option,
                "local_config": local if has_local else None}  # fmt: skip

    def load_split(self, role: str) -> datasets.Dataset:
        """The whole ``role`` split ("train" / "validation") in the task's schema, checked, not tokenised."""
        source, split = self.sources[role]
        return self.load(source, split, f"data.{role}_file")

    def subset(self, raw: datasets.Dataset, limit: int | None) -> datasets.Dataset:
        if limit is None or limit >= len(raw):
            return raw
        if self.subset_seed is None:
            return raw.select(range(limit))
        return raw.select(sorted(random.Random(self.subset_seed).sample(range(len(raw)), limit)))

    def _featurize(self, examples: datasets.Dataset, role: str) -> datasets.Dataset:
        started = time.time()
        feats = examples.map(
            self.featurize, batched=True, with_indices=True, remove_columns=examples.column_names,
            fn_kwargs={"tokenizer": self.tokenizer, **self.featurize_options()}, desc=f"tokenising {self.name} {role}",
            num_proc=self.num_proc,
        )  # fmt: skip
        # the integer position of every feature, so evaluation can be gathered across ranks
        files = [Path(f["filename"]) for f in feats.cache_files]
        feats = feats.add_column("feature_index", list(range(len(feats))))  # in memory: no second copy of the features
        self.cache_hits[role] = bool(files) and all(f.stat().st_mtime < started for f in files)
        return feats

    def setup(self, stage: str | None = None) -> None:
        # both splits are read and checked before any tokenisation, so a bad validation file fails in seconds
        train = self.load_split("train") if stage in (None, "fit") and self.train_features is None else None
        evaluation = self.load_split("validation") if self.eval_dataset is None else None
        if train is not None:
            self.train_features = self._featurize(self.subset(train, self.limits["train"]), "train")
        if evaluation is not None:
            self.eval_split_examples = len(evaluation)
            examples = self.subset(evaluation, self.limits["validation"])
            self.eval_dataset = self._featurize(examples, "validation")
            self.keep_eval_examples(examples)

    def describe(self) -> dict[str, Any]:
        """What a results row / run record needs to know about the data."""
        return {
            "data": self.name,
            "padding": self.padding,
            "group_by_length": self.group_by_length,
            "max_seq_length": self.max_seq_length,
            "train_features": len(self.train_features) if self.train_features is not None else None,
            "eval_examples": len(self.eval_examples) if self.eval_dataset is not None else 0,
            # before data.max_eval_samples: an evaluation on fewer examples is partial (skim.report marks it)
            "eval_split_examples": self.eval_split_examples,
            "eval_features": len(self.eval_dataset) if self.eval_dataset is not None else 0,
        }

    # ---- loaders -----------------------------------------------------------------------------------------
    def _per_device(self, size: int) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if size % world:
            raise ConfigError(f"batch size {size} is not divisible by the number of devices ({world})")
        return size // world

    def _loader(self, ds: datasets.Dataset, batch_size: int, loader=DataLoader, **kwargs: Any) -> DataLoader:
        pad_to = self.max_seq_length if self.padding == "max_length" else None
        pad_token_id = self.tokenizer.pad_token_id or 0
        return loader(
            ds.select_columns([*MODEL_COLUMNS, *self.scalar_columns]),
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=functools.partial(collate, scalars=self.scalar_columns, pad_token_id=pad_token_id, pad_to=pad_to),
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def _eval_loader(self, batch_size: int, sampler=None) -> DataLoader:
        # iterator creation draws a seed: keep it off the global RNG (dropout/Gumbel streams stay reproducible)
        return self._loader(self.eval_dataset, batch_size, sampler=sampler, generator=torch.Generator().manual_seed(0))

    def train_lengths(self) -> list[int]:
        """Real tokens per training feature (what a dynamically padded batch is padded to), read from Arrow."""
        return pc.list_value_length(self.train_features.with_format("arrow")["input_ids"]).to_pylist()

    def train_dataloader(self) -> DataLoader:
        lengths = self.train_lengths() if self.group_by_length else None
        if self.trainer is None or self.trainer.world_size == 1:
            # resumable mid-epoch: the shuffling order and the position are restored from checkpoints
            return self._loader(self.train_features, self.batch_size, ResumableDataLoader, seed=training_seed(),
                                lengths=lengths)  # fmt: skip
        world, per_device = self.trainer.world_size, self._per_device(self.batch_size)
        sampler = None
        if lengths is not None:
            sampler = DistributedGroupedSampler(self.train_features, lengths, per_device, num_replicas=world,
                                                rank=self.trainer.global_rank, seed=training_seed())  # fmt: skip
        return self._loader(self.train_features, per_device, shuffle=sampler is None, sampler=sampler,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # every sample exactly once: Lightning's DistributedSampler repeats samples to even out the ranks, which
            # would count them twice in summed statistics (kept tokens, FLOPs, accuracy); ranks may differ by a batch
            world, rank = self.trainer.world_size, self.trainer.global_rank
            sampler = UnrepeatedDistributedSampler(self.eval_dataset, num_replicas=world, rank=rank, shuffle=False)
        return self._eval_loader(self._per_device(self.eval_batch_size), sampler)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def benchmark_loader(self, batch_size: int) -> DataLoader:
        """Evaluation batches of exactly ``batch_size`` (no per-device split), in dataset order."""
        return self._eval_loader(batch_size)
