"""A training DataLoader that can resume in the middle of an epoch.

Lightning saves the ``state_dict()`` of stateful training loaders in its checkpoints and restores them on resume.
This loader shuffles with a generator seeded by (seed, epoch), counts the batches the training loop has taken (the
task module calls ``note_consumed`` when a step starts: the loader itself runs ahead, because Lightning prefetches),
and on resume skips exactly those, so an interrupted run continues with the batches it would have seen. (With
several processes Lightning wraps the sampler for DDP and the loader restarts its epoch instead.)
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class EpochShuffleSampler(Sampler[int]):
    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0

    def __len__(self) -> int:
        # the epoch's full length: Lightning counts the batches a resumed epoch already took itself
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist()[self.skip :])


class ResumableDataLoader(DataLoader):
    def __init__(self, dataset, *, batch_size: int, seed: int = 0, **kwargs: Any):
        self._skim_sampler = EpochShuffleSampler(len(dataset), seed)
        # a private generator: creating an iterator draws a worker base seed, which must not consume the global RNG
        # (dropout, Gumbel noise), or a resumed run would draw different noise from an uninterrupted one
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(dataset, batch_size=batch_size, sampler=self._skim_sampler, **kwargs)
        self._epoch = 0
        self._taken = 0  # batches the training loop took in the current epoch
        self._skip = 0  # batches to skip at the start of the current epoch (after a resume)
        self._taken_since_iter = False
        self._resume: dict | None = None

    def __iter__(self):
        if self._resume is not None:
            self._epoch, self._taken = self._resume["epoch"], self._resume["batches"]
            self._skip, self._resume = self._taken, None
        elif self._taken_since_iter:  # the previous epoch was used: a new one starts
            self._epoch, self._taken, self._skip = self._epoch + 1, 0, 0
        # else: iterator requested again before any batch was taken: same epoch, same position
        self._taken_since_iter = False
        self._skim_sampler.epoch = self._epoch
        self._skim_sampler.skip = self._skip * self.batch_size
        return super().__iter__()

    def note_consumed(self) -> None:
        self._taken += 1
        self._taken_since_iter = True

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)


def resumable_loader(plain: DataLoader) -> ResumableDataLoader:
    """The same loader (dataset, batch size, collate, workers), shuffled resumably with the current torch seed."""
    return ResumableDataLoader(
        plain.dataset,
        batch_size=plain.batch_size,
        seed=torch.initial_seed() % (2**31),
        collate_fn=plain.collate_fn,
        num_workers=plain.num_workers,
        persistent_workers=plain.persistent_workers,
    )
