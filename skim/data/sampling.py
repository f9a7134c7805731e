"""Distributed evaluation without duplicates.

Lightning's default DistributedSampler pads the evaluation set with repeated samples so every rank gets the same
count, which would count some examples twice in summed statistics (kept tokens, FLOPs, accuracy). Evaluation
loaders use Lightning's UnrepeatedDistributedSampler instead: every sample is seen exactly once, ranks may hold
one batch more or less, and the task modules gather or sum with that in mind.
"""

from __future__ import annotations

from torch.utils.data import Dataset, Sampler


def eval_sampler(trainer, dataset: Dataset) -> Sampler | None:
    if trainer is None or trainer.world_size <= 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)
