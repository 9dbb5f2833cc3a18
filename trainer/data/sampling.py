"""Which samples each rank reads, as pure functions of (seed, epoch, rank, world).

The train order is a permutation drawn from a generator seeded by (seed, epoch) only,
truncated to a multiple of the world size and dealt round-robin: rank r takes
positions r, r+W, r+2W, ... Ranks therefore read disjoint samples, and one optimizer
step of W ranks x k micro-batches covers the same samples as one rank doing W*k.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from .transforms import mix_seed

# Augmentation seeds are mix_seed(seed, epoch, index >= 0); the order takes index -1.
ORDER_STREAM = -1


def epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The global train order of an epoch; depends on nothing but its arguments."""
    gen = torch.Generator().manual_seed(mix_seed(seed, epoch, ORDER_STREAM))
    return torch.randperm(num_samples, generator=gen)


def rank_share(num_samples: int, world_size: int) -> int:
    """Train samples per rank per epoch (the tail that does not divide is dropped)."""
    return num_samples // world_size


class ResumableTrainSampler(Sampler):
    """Yields (epoch, index) keys for micro-batches [start_batch, num_batches) of an epoch.

    The epoch travels with each key so that dataset copies in (persistent) worker
    processes seed their augmentation correctly without being told about set_epoch.
    Skipped micro-batches are never yielded, so never decoded.
    """

    def __init__(self, num_samples: int, rank: int, world_size: int, batch_size: int,
                 num_batches: int, seed: int):
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.batch_size, self.num_batches, self.seed = batch_size, num_batches, seed
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch: expected 0..{self.num_batches}, got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def rank_indices(self) -> torch.Tensor:
        share = rank_share(self.num_samples, self.world_size)
        order = epoch_order(self.num_samples, self.seed, self.epoch)
        return order[: share * self.world_size][self.rank:: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.rank_indices()[self.start_batch * self.batch_size: self.num_batches * self.batch_size]
        return iter([(self.epoch, int(i)) for i in indices])

    def __len__(self) -> int:
        return (self.num_batches - self.start_batch) * self.batch_size


class PaddedEvalSampler(Sampler):
    """Validation shard of a rank, in file order, padded like DistributedSampler.

    Every rank gets ceil(N/W) samples (the first few repeated to fill), so every rank
    runs the same number of batches and per-batch collectives cannot hang.
    """

    def __init__(self, num_samples: int, rank: int, world_size: int):
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[int]:
        total = len(self) * self.world_size
        indices = [i % self.num_samples for i in range(total)]
        return iter(indices[self.rank:: self.world_size])

