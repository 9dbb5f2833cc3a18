"""The trainer's data layer: ImageFolder, DALI TFRecord and synthetic loaders behind one API.

    loaders = build_loaders(DataConfig(kind="imagefolder", dataset="digits", image_size=32,
                                       batch_size=64, val_batch_size=64, workers=2, seed=42),
                            rank, world_size)
    for epoch in range(start_epoch, epochs):
        loaders.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        for images, labels in loaders.train: ...   # len(loaders.train) micro-batches
        for images, labels in loaders.val: ...

Batches are (float32 NCHW normalised images, int64 labels). Validation is split across
ranks and padded to ceil(N/W) samples per rank (equal batch counts on every rank).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from .digits import DigitsPaths, default_root, materialise_digits
from .errors import DataError
from .steps import check_steps

KINDS = ("imagefolder", "dali", "synthetic")
DATASETS = (None, "digits")
IMAGENET_TRAIN_SIZE = 1_281_167

__all__ = ["DataConfig", "Loaders", "DataError", "DigitsPaths", "build_loaders", "materialise_digits", "KINDS"]


@dataclass
class DataConfig:
    kind: str = "imagefolder"
    train_dir: str | None = None
    val_dir: str | None = None
    data_dir: str | None = None
    dataset: str | None = None          # "digits": materialise the builtin set under $LARSCTL_DATA
    image_size: int = 224
    batch_size: int = 32                # per-rank micro-batch
    val_batch_size: int = 32
    workers: int = 4                    # DataLoader workers / DALI threads
    seed: int = 42
    num_classes: int = 1000             # synthetic; dali without data_dir/classes.txt
    synthetic_length: int = IMAGENET_TRAIN_SIZE  # synthetic samples per epoch (all ranks together)
    use_gpu: bool = False               # DALI mixed decoding; pinned memory for imagefolder
    batches_per_allreduce: int = 1      # the train stream yields whole optimizer steps only


@dataclass
class Loaders:
    train: Iterable
    val: Iterable
    num_classes: int
    train_samples: int
    val_samples: int
    batches_per_epoch: int              # full micro-batches per rank per epoch, before rounding to k
    _set_epoch: Callable[[int, int], None] = field(repr=False)
    # (epoch, first micro-batch, micro-batches) -> this rank's sample indices; None where the
    # loader keeps its own order (DALI's reader, synthetic data): no batch digest there.
    batch_indices: Callable[[int, int, int], object] | None = field(default=None, repr=False)

    def steps_per_epoch(self, batches_per_allreduce: int = 1) -> int:
        """Micro-batches per epoch (per rank), a multiple of batches_per_allreduce."""
        return self.batches_per_epoch // batches_per_allreduce * batches_per_allreduce

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Position the train stream at micro-batch start_batch of epoch (skipped ones are not read)."""
        self._set_epoch(epoch, start_batch)


def _check(cfg: DataConfig, rank: int, world_size: int) -> None:
    if cfg.kind not in KINDS:
        raise DataError(f"data: expected one of {', '.join(KINDS)}, got {cfg.kind!r}")
    if cfg.dataset not in DATASETS:
        raise DataError(f"dataset: expected 'digits' or none, got {cfg.dataset!r}")
    for name in ("image_size", "batch_size", "val_batch_size", "batches_per_allreduce",
                 "num_classes", "synthetic_length"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(f"{name}: expected a positive integer, got {value!r}")
    if not isinstance(cfg.workers, int) or cfg.workers < 0:
        raise DataError(f"workers: expected an integer >= 0, got {cfg.workers!r}")
    if not 0 <= rank < world_size:
        raise DataError(f"rank: expected 0..{world_size - 1}, got {rank}")


def build_loaders(cfg: DataConfig, rank: int = 0, world_size: int = 1) -> Loaders:
    """Loaders for this rank; bad input raises DataError (the trainer exits 2)."""
    _check(cfg, rank, world_size)
    if cfg.dataset == "digits" and cfg.kind != "synthetic":
        paths = materialise_digits(default_root(), cfg.image_size)
        cfg = replace(cfg, train_dir=str(paths.train_dir), val_dir=str(paths.val_dir),
                      data_dir=str(paths.data_dir))
    if cfg.kind == "imagefolder":
        return _imagefolder(cfg, rank, world_size)
    if cfg.kind == "dali":
        return _dali(cfg, rank, world_size)
    return _synthetic(cfg, rank, world_size)


def _imagefolder(cfg: DataConfig, rank: int, world_size: int) -> Loaders:
    import torch

    from .imagefolder import build_imagefolder

    data = build_imagefolder(cfg.train_dir, cfg.val_dir, cfg.image_size, cfg.batch_size, cfg.val_batch_size,
                             cfg.workers, cfg.seed, rank, world_size, cfg.batches_per_allreduce,
                             pin_memory=cfg.use_gpu and torch.cuda.is_available())
    return Loaders(data.train, data.val, len(data.classes), data.train_samples, data.val_samples,
                   data.batches_per_epoch, data.sampler.set_epoch, data.sampler.batch_indices)


def _dali(cfg: DataConfig, rank: int, world_size: int) -> Loaders:
    from .dali import build_dali

    data = build_dali(cfg.data_dir, cfg.image_size, cfg.batch_size, cfg.val_batch_size, cfg.workers, cfg.seed,
                      rank, world_size, cfg.batches_per_allreduce, cfg.use_gpu, cfg.num_classes)
    return Loaders(data.train, data.val, data.num_classes, data.train_samples, data.val_samples,
                   data.batches_per_epoch, data.train.set_epoch)


def _synthetic(cfg: DataConfig, rank: int, world_size: int) -> Loaders:
    from .synthetic import SyntheticStream

    full = cfg.synthetic_length // world_size // cfg.batch_size
    streamed = check_steps(full, cfg.batches_per_allreduce, cfg.synthetic_length, cfg.batch_size,
                           world_size, "synthetic_length")
    val_samples = max(cfg.val_batch_size * world_size, cfg.synthetic_length // 5)  # an 80/20 split
    train = SyntheticStream(cfg.batch_size, cfg.image_size, cfg.num_classes, streamed, cfg.seed + rank)
    val = SyntheticStream(cfg.val_batch_size, cfg.image_size, cfg.num_classes,
                          -(-val_samples // world_size // cfg.val_batch_size), cfg.seed + 7919 + rank)

    def set_epoch(epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= streamed:
            raise ValueError(f"start_batch: expected 0..{streamed}, got {start_batch}")
        train.start_batch = start_batch

    return Loaders(train, val, cfg.num_classes, cfg.synthetic_length, val_samples, full, set_epoch)
