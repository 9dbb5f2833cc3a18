"""Which samples each rank reads, as pure functions of (seed, epoch, rank, world).

The train order is a permutation drawn from a generator seeded by (seed, epoch) only.
Step s of an epoch covers its global positions [sB, (s+1)B) for any split of
B = W x b x k, dealt in blocks: micro-batch j of rank r takes the b positions from
sB + (r*k + j)*b.  Ranks therefore read disjoint samples, and two splits with the same
per-GPU batch b group the samples into the same micro-batches (2 ranks x 64 x 2 and
1 rank x 64 x 4 see the same 64-sample batches, so the same BatchNorm statistics): a run
continued on such a shape differs from the one that never moved only in the order of
its gradient sums.  The tail of an epoch that makes no whole step is dropped.

``digest_sums`` turns the sample indices one rank read in a step into three sums that add
up over ranks and micro-batches whatever the split, so a run's ``batch_digest`` (the
digest of the summed parts) is the same for the same step on any shape.
"""
from __future__ import annotations

import hashlib
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from .transforms import mix_seed

# Augmentation seeds are mix_seed(seed, epoch, index >= 0); the order takes index -1.
ORDER_STREAM = -1


def epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The global train order of an epoch; depends on nothing but its arguments."""
    gen = torch.Generator().manual_seed(mix_seed(seed, epoch, ORDER_STREAM))
    return torch.randperm(num_samples, generator=gen)


DIGEST_PARTS = 3  # 20-bit pieces of a 60-bit hash per sample: their sums stay exact in float64


def digest_sums(epoch: int, indices: torch.Tensor) -> list[float]:
    """Order- and split-independent sums over the samples ``indices`` of ``epoch`` (splitmix64 of
    (epoch, index), cut into DIGEST_PARTS 20-bit pieces, each summed)."""
    salt = np.array([epoch], dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # arrays wrap silently
    z = indices.numpy().astype(np.uint64) + salt
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    mask = np.uint64(0xFFFFF)
    return [float(((z >> np.uint64(20 * i)) & mask).sum(dtype=np.float64)) for i in range(DIGEST_PARTS)]


def batch_digest(sums: Sequence[float]) -> str:
    """The text a train record carries for the summed parts of every rank."""
    return hashlib.sha256(",".join(str(int(v)) for v in sums).encode()).hexdigest()[:16]


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
                 num_batches: int, seed: int, batches_per_allreduce: int = 1):
        if num_batches % batches_per_allreduce:
            raise ValueError(f"num_batches {num_batches}: expected whole steps of {batches_per_allreduce}")
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.batch_size, self.num_batches, self.seed = batch_size, num_batches, seed
        self.batches_per_allreduce = batches_per_allreduce
        self.epoch, self.start_batch = 0, 0
        self._cached: tuple[int, torch.Tensor] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch: expected 0..{self.num_batches}, got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def rank_indices(self, epoch: int | None = None) -> torch.Tensor:
        epoch = self.epoch if epoch is None else epoch
        if self._cached is None or self._cached[0] != epoch:
            block = self.batches_per_allreduce * self.batch_size  # one rank's share of a step
            steps = self.num_batches // self.batches_per_allreduce
            order = epoch_order(self.num_samples, self.seed, epoch)[: steps * self.world_size * block]
            self._cached = (epoch, order.view(steps, self.world_size, block)[:, self.rank].reshape(-1))
        return self._cached[1]

    def batch_indices(self, epoch: int, first_batch: int, batches: int) -> torch.Tensor:
        """The samples of micro-batches [first_batch, first_batch + batches) of ``epoch`` on this rank."""
        return self.rank_indices(epoch)[first_batch * self.batch_size: (first_batch + batches) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.batch_indices(self.epoch, self.start_batch, self.num_batches - self.start_batch)
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

