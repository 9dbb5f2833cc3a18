"""Random tensors of the configured shape, for throughput benchmarks (no decoding cost)."""
from __future__ import annotations

from typing import Iterator

import torch


class SyntheticStream:
    """`num_batches` repetitions of one fixed batch, drawn once at construction."""

    def __init__(self, batch_size: int, image_size: int, num_classes: int, num_batches: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
        self.labels = torch.randint(0, num_classes, (batch_size,), generator=gen, dtype=torch.int64)
        self.num_batches = num_batches
        self.start_batch = 0

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(len(self)):
            yield self.images, self.labels
