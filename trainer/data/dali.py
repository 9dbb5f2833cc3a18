"""DALI loaders for the reference TFRecord layout under --data-dir.

    data_dir/train/*  data_dir/validation/*  data_dir/idx_files/{train,validation}/<same names>

Missing index files are generated with the tfrecord2idx tool that ships with DALI.
Decoding runs on the CPU, or "mixed" (nvJPEG on the GPU) when use_gpu is set; images
come out float32 NCHW normalised (on the GPU in mixed mode), labels int64 0-based on
the CPU (the records' labels are 1-based, as in ImageNet).

Resume is not exact here: DALI's reader keeps its own shuffled stream, so a resumed
run streams the right number of micro-batches but not the same samples as an
uninterrupted one. Use --data imagefolder where bit-identical resume matters.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .errors import DataError
from .steps import check_steps
from .tfrecord import CLASSES_FILE, INDEX_DIR, LABEL_OFFSET, SPLITS, count_indexed, ensure_indexes, record_files
from .transforms import MEAN, STD, val_size

READER = "Reader"
_FEATURES = ("image/encoded", "image/class/label")


@dataclass(frozen=True)
class Split:
    records: list[Path]
    indexes: list[Path]
    num_samples: int


def find_split(data_dir: Path, split: str) -> Split:
    records = record_files(Path(data_dir) / split)
    indexes = ensure_indexes(records, Path(data_dir) / INDEX_DIR / split)
    return Split(records, indexes, count_indexed(indexes))


def class_count(data_dir: Path, default: int) -> int:
    """Lines of data_dir/classes.txt when present (the digits set writes it), else default."""
    names = Path(data_dir) / CLASSES_FILE
    if names.is_file():
        return sum(1 for line in names.read_text().splitlines() if line.strip())
    return default


def _pipeline(split: Split, train: bool, image_size: int, batch_size: int, threads: int,
              seed: int, rank: int, world_size: int, use_gpu: bool):
    from nvidia.dali import fn, pipeline_def, types
    import nvidia.dali.tfrecord as tfrec

    @pipeline_def
    def pipe():
        inputs = fn.readers.tfrecord(
            path=[str(p) for p in split.records], index_path=[str(p) for p in split.indexes],
            features={"image/encoded": tfrec.FixedLenFeature((), tfrec.string, ""),
                      "image/class/label": tfrec.FixedLenFeature([1], tfrec.int64, -1)},
            shard_id=rank, num_shards=world_size, random_shuffle=train, initial_fill=1024,
            pad_last_batch=not train, name=READER,
        )
        # Padding sizes from NVIDIA's ResNet-50 example: nvJPEG buffers big enough for
        # ImageNet images up front, so the mixed decoder does not reallocate per batch.
        padding = dict(device_memory_padding=211025920, host_memory_padding=140544512) if use_gpu else {}
        images = fn.decoders.image(inputs["image/encoded"], device="mixed" if use_gpu else "cpu",
                                   output_type=types.RGB, **padding)
        normalize = dict(dtype=types.FLOAT, output_layout="CHW",
                         mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD])
        if train:
            images = fn.random_resized_crop(images, size=(image_size, image_size),
                                            random_area=(0.08, 1.0), random_aspect_ratio=(3 / 4, 4 / 3))
            images = fn.crop_mirror_normalize(images, mirror=fn.random.coin_flip(probability=0.5), **normalize)
        else:
            images = fn.resize(images, resize_shorter=val_size(image_size))
            images = fn.crop_mirror_normalize(images, crop=(image_size, image_size), **normalize)
        return images, inputs["image/class/label"]

    device_id = torch.cuda.current_device() if use_gpu else None
    built = pipe(batch_size=batch_size, num_threads=max(1, threads), device_id=device_id,
                 seed=seed * 1000 + rank + (0 if train else 500))
    built.build()
    return built


def _iterator(pipe, train: bool):
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    return DALIGenericIterator(
        pipe, ["images", "labels"], reader_name=READER, auto_reset=True,
        last_batch_policy=LastBatchPolicy.DROP if train else LastBatchPolicy.PARTIAL,
    )


def _unpack(batch) -> tuple[torch.Tensor, torch.Tensor]:
    out = batch[0]
    return out["images"], out["labels"].reshape(-1).to(torch.int64) - LABEL_OFFSET


class DaliTrainStream:
    """Exactly `num_batches - start_batch` micro-batches per epoch from DALI's endless stream.

    Every rank yields the same count (shards differ in size by up to one sample), so
    collectives stay in step; DALI's reader epochs just run on underneath.
    """

    def __init__(self, pipe, num_batches: int):
        self.iterator = _iterator(pipe, train=True)
        self.num_batches, self.start_batch = num_batches, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch: expected 0..{self.num_batches}, got {start_batch}")
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(len(self)):
            try:
                batch = next(self.iterator)
            except StopIteration:  # end of a DALI epoch; auto_reset has rewound it
                batch = next(self.iterator)
            yield _unpack(batch)


class DaliValStream:
    """The rank's validation shard, padded to ceil(N/W) samples like PaddedEvalSampler,
    so every rank runs the same number of batches."""

    def __init__(self, pipe, num_samples: int, world_size: int, batch_size: int):
        self.iterator = _iterator(pipe, train=False)
        self.target = -(-num_samples // world_size)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-self.target // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        first = held = None
        seen = 0
        for batch in self.iterator:  # PARTIAL policy: the shard exactly, then StopIteration
            images, labels = _unpack(batch)
            seen += len(labels)
            if first is None:
                first = images[:1], labels[:1]
            if held is not None:
                yield held
            held = images, labels
        if held is None:
            return
        if seen < self.target:  # a shorter shard: repeat its first sample
            if len(held[1]) < self.batch_size:
                held = torch.cat([held[0], first[0]]), torch.cat([held[1], first[1]])
            else:
                yield held
                held = first
        yield held


@dataclass
class DaliData:
    train: DaliTrainStream
    val: DaliValStream
    num_classes: int
    train_samples: int
    val_samples: int
    batches_per_epoch: int


def build_dali(data_dir, image_size: int, batch_size: int, val_batch_size: int, workers: int, seed: int,
               rank: int, world_size: int, batches_per_allreduce: int, use_gpu: bool,
               num_classes: int) -> DaliData:
    if data_dir is None:
        raise DataError("data_dir: no directory given (expected the TFRecord layout: train/, validation/, idx_files/)")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data_dir not found (expected train/, validation/ and idx_files/)")
    if use_gpu and not torch.cuda.is_available():
        raise DataError("use_gpu: DALI mixed decoding needs a CUDA device and none is visible")
    train, val = (find_split(data_dir, split) for split in SPLITS)
    full = train.num_samples // world_size // batch_size
    streamed = check_steps(full, batches_per_allreduce, train.num_samples, batch_size, world_size,
                           data_dir / "train")
    common = dict(image_size=image_size, threads=workers, seed=seed, rank=rank,
                  world_size=world_size, use_gpu=use_gpu)
    return DaliData(
        train=DaliTrainStream(_pipeline(train, True, batch_size=batch_size, **common), streamed),
        val=DaliValStream(_pipeline(val, False, batch_size=val_batch_size, **common),
                          val.num_samples, world_size, val_batch_size),
        num_classes=class_count(data_dir, num_classes),
        train_samples=train.num_samples,
        val_samples=val.num_samples,
        batches_per_epoch=full,
    )
