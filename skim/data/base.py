"""What the task DataModules share: per-device batch sizes and the train / eval / benchmark loaders.

A subclass provides ``train_features``, ``eval_dataset``, ``tokenizer``, ``padding``, ``max_seq_length``,
``batch_size``, ``eval_batch_size``, ``num_workers``, the ``loader_columns`` it feeds and ``collate_fn(pad_to)``.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from skim.data.resumable import resumable_loader
from skim.data.sampling import eval_sampler
from skim.errors import ConfigError


class SkimDataModule(pl.LightningDataModule):
    loader_columns: tuple[str, ...] = ()

    def collate_fn(self, pad_to: int | None) -> Callable:
        raise NotImplementedError

    def _per_device(self, size: int) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if size % world:
            raise ConfigError(f"batch size {size} is not divisible by the number of devices ({world})")
        return size // world

    def _loader(self, ds: datasets.Dataset, batch_size: int, shuffle: bool, per_device: bool = True) -> DataLoader:
        return DataLoader(
            ds.select_columns(list(self.loader_columns)),
            batch_size=self._per_device(batch_size) if per_device else batch_size,
            shuffle=shuffle,
            sampler=None if shuffle or not per_device else eval_sampler(self.trainer, ds),
            # iterator creation draws a seed: keep it off the global RNG (dropout/Gumbel streams stay reproducible)
            generator=torch.Generator().manual_seed(0),
            num_workers=self.num_workers,
            collate_fn=self.collate_fn(self.max_seq_length if self.padding == "max_length" else None),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.trainer is None or self.trainer.world_size == 1:
            # resumable mid-epoch: the shuffling order and the position are restored from checkpoints
            return resumable_loader(self._loader(self.train_features, self.batch_size, shuffle=False))
        return self._loader(self.train_features, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def benchmark_loader(self, batch_size: int) -> DataLoader:
        """Evaluation batches of exactly ``batch_size`` (no per-device split), in dataset order."""
        return self._loader(self.eval_dataset, batch_size, shuffle=False, per_device=False)
