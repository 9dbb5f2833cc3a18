"""ImageFolder train/val loaders with exact, resumable sample order and augmentation."""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.datasets import ImageFolder

from .errors import DataError
from .sampling import PaddedEvalSampler, ResumableTrainSampler, rank_share
from .steps import check_steps
from .transforms import sample_generator, train_transform, val_transform


def scan_folder(path: Path | None, field: str) -> ImageFolder:
    """Index an ImageFolder tree; bad layouts raise DataError naming the path and the field."""
    if path is None:
        raise DataError(f"{field}: no directory given (expected an ImageFolder tree: {field}/<class>/<image>)")
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: {field} not found (expected a directory of class folders)")
    if not any(p.is_dir() for p in path.iterdir()):
        raise DataError(f"{path}: {field} has no class folders (expected {path}/<class>/<image>)")
    try:
        return ImageFolder(str(path), loader=str)  # only lists files; decoding happens per sample
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{path}: {field}: {exc}".replace("\n", " ")) from None


def check_same_classes(train: ImageFolder, val: ImageFolder, train_dir: Path, val_dir: Path) -> None:
    if train.classes == val.classes:
        return
    only_train = sorted(set(train.classes) - set(val.classes))
    only_val = sorted(set(val.classes) - set(train.classes))
    raise DataError(
        f"{val_dir}: class folders differ from {train_dir}: "
        f"only in train {only_train[:5]}{'...' if len(only_train) > 5 else ''}, "
        f"only in val {only_val[:5]}{'...' if len(only_val) > 5 else ''}"
    )


@dataclass(frozen=True)
class Unreadable:
    """Stands in for a sample whose file does not decode; the main process raises it."""
    path: str
    reason: str


def _decode(path: str) -> Image.Image | Unreadable:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return Unreadable(path, str(exc) or type(exc).__name__)


class TrainImages(Dataset):
    """Keys are (epoch, index); augmentation is seeded by (seed, epoch, index) only."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int, seed: int):
        self.samples, self.image_size, self.seed = samples, image_size, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        path, label = self.samples[index]
        img = _decode(path)
        if isinstance(img, Unreadable):
            return img
        return train_transform(img, self.image_size, sample_generator(self.seed, epoch, index)), label


class ValImages(Dataset):
    def __init__(self, samples: list[tuple[str, int]], image_size: int):
        self.samples, self.image_size = samples, image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        img = _decode(path)
        return img if isinstance(img, Unreadable) else (val_transform(img, self.image_size), label)


def collate(batch: list):
    """default_collate, unless a sample did not decode: then the batch is that sample."""
    for item in batch:
        if isinstance(item, Unreadable):
            return item
    return default_collate(batch)


class Stream:
    """Iterates a DataLoader, turning an Unreadable sample into a DataError in the caller."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if isinstance(batch, Unreadable):
                raise DataError(f"{batch.path}: cannot read image ({batch.reason})")
            yield batch


def _loader(dataset: Dataset, sampler, batch_size: int, workers: int, pin: bool, seed: int) -> DataLoader:
    kwargs = {}
    if workers > 0:
        kwargs["persistent_workers"] = True
        # Forked workers break some InfiniBand/MPI stacks; forkserver is what Horovod advises.
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            # The server imports this module (torch, torchvision) once; workers fork from it.
            context.set_forkserver_preload([__name__])
            kwargs["multiprocessing_context"] = context
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=pin, drop_last=False,
        # Its own generator: creating an iterator must not draw from the global RNG,
        # or a resumed run's model-side randomness would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed), **kwargs,
    )


@dataclass
class ImageFolderData:
    train: Stream
    val: Stream
    sampler: ResumableTrainSampler
    classes: list[str]
    train_samples: int
    val_samples: int
    batches_per_epoch: int  # full micro-batches per rank before the k rounding


def build_imagefolder(train_dir, val_dir, image_size: int, batch_size: int, val_batch_size: int,
                      workers: int, seed: int, rank: int, world_size: int, batches_per_allreduce: int,
                      pin_memory: bool) -> ImageFolderData:
    train = scan_folder(train_dir, "train_dir")
    val = scan_folder(val_dir, "val_dir")
    check_same_classes(train, val, Path(train_dir), Path(val_dir))
    full = rank_share(len(train.samples), world_size) // batch_size
    streamed = check_steps(full, batches_per_allreduce, len(train.samples), batch_size, world_size, train_dir)
    sampler = ResumableTrainSampler(len(train.samples), rank, world_size, batch_size, streamed, seed,
                                    batches_per_allreduce)
    return ImageFolderData(
        train=Stream(_loader(TrainImages(train.samples, image_size, seed), sampler, batch_size,
                             workers, pin_memory, seed)),
        val=Stream(_loader(ValImages(val.samples, image_size), PaddedEvalSampler(len(val.samples), rank, world_size),
                           val_batch_size, workers, pin_memory, seed)),
        sampler=sampler,
        classes=list(train.classes),
        train_samples=len(train.samples),
        val_samples=len(val.samples),
        batches_per_epoch=full,
    )
