"""What the task DataModules share: per-device batch sizes and the train / eval / benchmark loaders.

A subclass provides ``train_features``, ``eval_dataset``, ``tokenizer``, ``padding``, ``max_seq_length``,
``batch_size``, ``eval_batch_size``, ``num_workers``, ``group_by_length``, the ``loader_columns`` it feeds and
``collate_fn(pad_to)``, and calls ``check_types`` and ``check_padding`` in its constructor.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

from skim.data.resumable import DistributedGroupedSampler, resumable_loader, training_seed
from skim.data.sampling import eval_sampler
from skim.errors import ConfigError
from skim.utils.resolvers import skim_root

PADDING_POLICIES = ("dynamic", "max_length")
# sizes that must be at least 1 (a zero batch or sample count fails later, far from the option)
POSITIVE_OPTIONS = ("max_seq_length", "batch_size", "eval_batch_size", "max_train_samples", "max_eval_samples")
_TYPE_NAMES = {int: "an integer", bool: "true or false", str: "a string", dict: "a mapping", type(None): "null"}


def _is_instance(value: Any, t: type) -> bool:
    # bool is an int subclass: data.batch_size=true is not a size
    return isinstance(value, t) and not (t is int and isinstance(value, bool))


def local_config(name: str) -> str | None:
    """``<name>_local`` when conf/data has it (the copies in ../shared/data): what offline users can switch to."""
    local = f"{name}_local"
    return local if (Path(skim_root()) / "conf" / "data" / f"{local}.yaml").exists() else None


class SkimDataModule(pl.LightningDataModule):
    loader_columns: tuple[str, ...] = ()
    group_by_length: bool = False

    def check_types(self, options: dict[str, Any]) -> None:
        """Check each constructor argument against its annotation, before any data is read.

        Hydra hands command-line values over as parsed (``data.batch_size=abc`` is the string ``'abc'``), so a wrong
        type would otherwise fail far from the option, in a data loader or a format string.
        """
        for name, hint in typing.get_type_hints(type(self).__init__).items():
            if name not in options:
                continue
            value = options[name]
            allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
            if not any(_is_instance(value, t) for t in allowed):
                expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed)
                raise ConfigError(f"data.{name} must be {expected}, got {value!r} ({type(value).__name__})")
            if name in POSITIVE_OPTIONS and value is not None and value < 1:
                raise ConfigError(f"data.{name} must be at least 1, got {value}")

    @staticmethod
    def check_padding(padding: str, group_by_length: bool) -> None:
        if padding not in PADDING_POLICIES:
            raise ConfigError(f"data.padding must be one of {PADDING_POLICIES}, got {padding!r}")
        if group_by_length and padding != "dynamic":
            raise ConfigError("data.group_by_length=true groups features to pad less: it needs data.padding=dynamic")

    def collate_fn(self, pad_to: int | None) -> Callable:
        raise NotImplementedError

    def _per_device(self, size: int) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if size % world:
            raise ConfigError(f"batch size {size} is not divisible by the number of devices ({world})")
        return size // world

    def _loader(
        self, ds: datasets.Dataset, batch_size: int, shuffle: bool, per_device: bool = True, sampler=None
    ) -> DataLoader:
        if sampler is None and not shuffle and per_device:
            sampler = eval_sampler(self.trainer, ds)
        return DataLoader(
            ds.select_columns(list(self.loader_columns)),
            batch_size=self._per_device(batch_size) if per_device else batch_size,
            shuffle=shuffle,
            sampler=sampler,
            # iterator creation draws a seed: keep it off the global RNG (dropout/Gumbel streams stay reproducible)
            generator=torch.Generator().manual_seed(0),
            num_workers=self.num_workers,
            collate_fn=self.collate_fn(self.max_seq_length if self.padding == "max_length" else None),
            persistent_workers=self.num_workers > 0,
        )

    def train_lengths(self) -> list[int]:
        """Real tokens per training feature (what a dynamically padded batch is padded to), read from Arrow."""
        table = self.train_features.with_format("arrow")[:]
        return pc.list_value_length(table.column("input_ids")).to_pylist()

    def train_dataloader(self) -> DataLoader:
        lengths = self.train_lengths() if self.group_by_length else None
        if self.trainer is None or self.trainer.world_size == 1:
            # resumable mid-epoch: the shuffling order and the position are restored from checkpoints
            return resumable_loader(self._loader(self.train_features, self.batch_size, shuffle=False, per_device=False), lengths)
        if lengths is None:
            return self._loader(self.train_features, self.batch_size, shuffle=True)
        world, per_device = self.trainer.world_size, self._per_device(self.batch_size)
        sampler = DistributedGroupedSampler(
            self.train_features, lengths, per_device, num_replicas=world, rank=self.trainer.global_rank, seed=training_seed()
        )
        return self._loader(self.train_features, self.batch_size, shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def benchmark_loader(self, batch_size: int) -> DataLoader:
        """Evaluation batches of exactly ``batch_size`` (no per-device split), in dataset order."""
        return self._loader(self.eval_dataset, batch_size, shuffle=False, per_device=False)
