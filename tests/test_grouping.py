"""Length-grouped training batches (``data.group_by_length``): similar lengths per batch, shuffled batch order,
deterministic per (seed, epoch), resumable, and the same global groups on every DDP rank."""

from __future__ import annotations

import itertools

import pytest
import torch

from skim.data.qa_datamodule import QADataModule
from skim.data.resumable import DistributedGroupedSampler, EpochSampler, ResumableDataLoader, length_grouped_order
from skim.errors import ConfigError


def _lengths(n: int = 1000, seed: int = 0) -> list[int]:
    return torch.randint(10, 385, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _padded(order: list[int], lengths: list[int], bs: int) -> int:
    """Tokens a dynamically padded epoch in this order computes (every batch padded to its longest feature)."""
    return sum(max(lengths[i] for i in order[k : k + bs]) * len(order[k : k + bs]) for k in range(0, len(order), bs))


def test_grouped_order_is_a_permutation_with_tight_batches():
    lengths, bs = _lengths(1003), 32
    order = length_grouped_order(lengths, bs, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(len(lengths)))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1)).tolist()
    real = sum(lengths)
    # mega-batches (here 7 batches) sorted by length: little padding is left; a random order pads ~1.7x here
    assert _padded(order, lengths, bs) < 1.2 * real
    assert _padded(order, lengths, bs) < 0.7 * _padded(shuffled, lengths, bs)
    # the short last batch (1003 = 31 x 32 + 11) stays last, so every other batch is full
    assert len(order[31 * bs :]) == 11


def test_grouped_batches_come_in_shuffled_order():
    lengths, bs = _lengths(3200), 32
    order = length_grouped_order(lengths, bs, torch.Generator().manual_seed(0))
    longest = [max(lengths[i] for i in order[k : k + bs]) for k in range(0, len(order), bs)]
    # no descending run inside the 50-batch mega-batches (what the HF order alone would give)
    descents = sum(a > b for a, b in itertools.pairwise(longest))
    assert 0.3 < descents / (len(longest) - 1) < 0.7


def test_epoch_sampler_is_deterministic_per_seed_and_epoch():
    lengths = _lengths(500)
    a, b = EpochSampler(500, seed=7, lengths=lengths, batch_size=16), EpochSampler(500, seed=7, lengths=lengths, batch_size=16)
    assert list(a) == list(b)
    b.epoch = 1
    assert list(a) != list(b)
    assert list(EpochSampler(500, seed=8, lengths=lengths, batch_size=16)) != list(a)
    with pytest.raises(ValueError):
        EpochSampler(10, seed=0, lengths=[1, 2], batch_size=2)


def test_resumable_grouped_loader_skips_exactly_the_taken_batches():
    lengths = _lengths(200)
    data = list(range(200))
    full = ResumableDataLoader(data, batch_size=8, seed=3, lengths=lengths)
    batches = [b.tolist() for b in full]
    part = ResumableDataLoader(data, batch_size=8, seed=3, lengths=lengths)
    it = iter(part)
    for _ in range(5):
        next(it)
        part.note_consumed()
    state = part.state_dict()
    resumed = ResumableDataLoader(data, batch_size=8, seed=3, lengths=lengths)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == batches[5:]


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_ranks_share_global_groups(world):
    lengths, bs = _lengths(997), 8
    samplers = [DistributedGroupedSampler(list(range(997)), lengths, bs, num_replicas=world, rank=r, seed=5) for r in range(world)]
    orders = [list(s) for s in samplers]
    assert len({len(o) for o in orders}) == 1
    assert set().union(*map(set, orders)) == set(range(997))
    glob = length_grouped_order(lengths, bs * world, torch.Generator().manual_seed(5))
    for k in range(len(orders[0]) // bs - 1):
        group = set(glob[k * bs * world : (k + 1) * bs * world])
        for o in orders:
            assert set(o[k * bs : (k + 1) * bs]) <= group
    for s in samplers:
        s.set_epoch(1)
    assert [list(s) for s in samplers] != orders


def test_group_by_length_on_real_squad_features(minilm_path, squad_dev, tmp_path):
    kw = {"tokenizer": minilm_path, "hub_name": None, "train_file": str(squad_dev), "validation_file": str(squad_dev),
          "cache_dir": str(tmp_path / "cache"), "max_train_samples": 600, "max_eval_samples": 8, "batch_size": 16}
    torch.manual_seed(0)
    grouped = QADataModule(group_by_length=True, **kw)
    grouped.setup("fit")
    plain = QADataModule(**kw)
    plain.setup("fit")
    real = sum(grouped.train_lengths())
    assert real == sum(sum(f) for f in grouped.train_features["attention_mask"])
    padded = {name: sum(b["input_ids"].numel() for b in dm.train_dataloader()) for name, dm in (("g", grouped), ("p", plain))}
    assert padded["g"] < 1.2 * real
    assert padded["g"] < 0.8 * padded["p"]
    assert grouped.describe()["group_by_length"] is True


def test_group_by_length_needs_dynamic_padding(minilm_path):
    with pytest.raises(ConfigError, match="group_by_length"):
        QADataModule(tokenizer=minilm_path, padding="max_length", group_by_length=True)
