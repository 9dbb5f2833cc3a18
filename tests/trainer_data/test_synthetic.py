"""Synthetic data: fixed random tensors of the configured shape, the same step arithmetic."""
from __future__ import annotations

import torch

from trainer.data import DataConfig, build_loaders


def test_synthetic_batches_have_the_configured_shape_and_length():
    cfg = DataConfig(kind="synthetic", image_size=24, batch_size=8, val_batch_size=4, num_classes=5,
                     synthetic_length=400, batches_per_allreduce=3)
    loaders = build_loaders(cfg, rank=1, world_size=2)
    assert loaders.batches_per_epoch == 400 // 2 // 8 == 25
    assert loaders.steps_per_epoch(3) == len(loaders.train) == 24 and loaders.num_classes == 5
    batches = list(loaders.train)
    assert len(batches) == 24
    images, labels = batches[0]
    assert images.shape == (8, 3, 24, 24) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and 0 <= labels.min() <= labels.max() < 5
    assert all(x is images for x, _ in batches)  # drawn once, reused: no per-step cost
    loaders.set_epoch(1, start_batch=21)
    assert len(list(loaders.train)) == 3
    val = list(loaders.val)
    assert val[0][0].shape == (4, 3, 24, 24) and len(val) == len(loaders.val) == 80 // 2 // 4
