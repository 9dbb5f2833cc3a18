"""Micro-batches per epoch: pure arithmetic shared by every loader kind (no torch import)."""
from __future__ import annotations

from .errors import DataError


def check_steps(full_batches: int, batches_per_allreduce: int, num_samples: int, batch_size: int,
                world_size: int, where) -> int:
    """Micro-batches per rank per epoch, rounded down to whole optimizer steps (never zero)."""
    steps = full_batches // batches_per_allreduce * batches_per_allreduce
    if steps == 0:
        raise DataError(
            f"{where}: {num_samples} training samples are fewer than one optimizer step of "
            f"batch_size {batch_size} x {world_size} ranks x batches_per_allreduce {batches_per_allreduce}"
        )
    return steps
