"""Training-order samplers: a function of (seed, epoch) only, so that runs are reproducible and resumable.

``EpochSampler`` shuffles, or with ``lengths`` forms length-grouped batches (``data.group_by_length``): features of
similar length share a batch, so dynamic padding pads little, and the batches come in a shuffled order. The
grouping is the HF Trainer's (random permutation, mega-batches of up to 50 batches sorted by length); on top of it
the full batches are shuffled, so that batch length has no trend within an epoch, and a short last batch stays last.

``ResumableDataLoader`` can resume in the middle of an epoch. Lightning saves the ``state_dict()`` of stateful
training loaders in its checkpoints and restores them on resume. The loader counts the batches the training loop
has taken (the task module calls ``note_consumed`` when a step starts: the loader itself runs ahead, because
Lightning prefetches), and on resume skips exactly those, so an interrupted run continues with the batches it would
have seen. With several processes the loader restarts its epoch instead, and length grouping uses
``DistributedGroupedSampler``: every rank's batch comes from the same global group of ``world × batch`` features.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


def length_grouped_order(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """Indices whose consecutive ``batch_size`` slices hold features of similar length, full batches shuffled."""
    order = get_length_grouped_indices(list(lengths), batch_size, generator=generator)
    full = len(order) // batch_size
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(full)]
    shuffled = [i for b in torch.randperm(full, generator=generator).tolist() for i in batches[b]]
    return shuffled + order[full * batch_size :]


class EpochSampler(Sampler[int]):
    def __init__(self, n: int, seed: int, lengths: Sequence[int] | None = None, batch_size: int = 1):
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} samples")
        self.n, self.seed, self.lengths, self.batch_size = n, seed, lengths, batch_size
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        # the epoch's full length: Lightning counts the batches a resumed epoch already took itself
        return self.n

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.lengths is None:
            return torch.randperm(self.n, generator=g).tolist()
        return length_grouped_order(self.lengths, self.batch_size, g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip :])


class DistributedGroupedSampler(DistributedSampler):
    """Length-grouped order for DDP. A ``DistributedSampler``, so Lightning keeps it and calls ``set_epoch``.

    Rank r takes every world-th index of the global order, which is grouped in slices of ``world × batch_size``:
    its k-th batch is drawn from the k-th global group, as every other rank's k-th batch is.
    """

    def __init__(self, dataset, lengths: Sequence[int], batch_size: int, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed, drop_last=False)
        self.lengths, self.batch_size = lengths, batch_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = length_grouped_order(self.lengths, self.batch_size * self.num_replicas, g)
        order += order[: self.total_size - len(order)]  # as DistributedSampler: repeat the head to even out ranks
        return iter(order[self.rank : self.total_size : self.num_replicas])


class ResumableDataLoader(DataLoader):
    def __init__(self, dataset, *, batch_size: int, seed: int = 0, lengths: Sequence[int] | None = None, **kwargs: Any):
        self._skim_sampler = EpochSampler(len(dataset), seed, lengths=lengths, batch_size=batch_size)
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


def training_seed() -> int:
    """The seed of the training order: the current torch seed (set by ``seed_everything``)."""
    return torch.initial_seed() % (2**31)

