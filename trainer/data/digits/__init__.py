"""The builtin real data set: scikit-learn's handwritten digits in both trainer layouts.

1797 real 8x8 scans (10 classes, bundled with scikit-learn, no download), upscaled to
`image_size` and split 80/20 (stratified, fixed seed) into

    <root>/digits-<size>/imagefolder/{train,val}/<class>/<n>.png     (lossless PNG)
    <root>/digits-<size>/tfrecord/{train,validation}/<split>-0000k-of-0000n   (JPEG q95)
    <root>/digits-<size>/tfrecord/idx_files/{train,validation}/...  (DALI's tfrecord2idx)
    <root>/digits-<size>/tfrecord/classes.txt                        (class names, one a line)

Build by hand with `python -m trainer.data.digits --out DIR --image-size 32`.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..tfrecord import CLASSES_FILE, INDEX_DIR, ensure_indexes, image_example, shard_name, write_record

SPLIT_SEED = 0
VAL_FRACTION = 0.2
TRAIN_SHARDS = 4
VAL_SHARDS = 2
JPEG_QUALITY = 95


@dataclass(frozen=True)
class DigitsPaths:
    train_dir: Path  # ImageFolder train
    val_dir: Path    # ImageFolder val
    data_dir: Path   # TFRecord layout for --data dali


def digits_dir(root: Path, image_size: int) -> Path:
    return Path(root) / f"digits-{image_size}"


def _paths(base: Path) -> DigitsPaths:
    return DigitsPaths(base / "imagefolder" / "train", base / "imagefolder" / "val", base / "tfrecord")


def split_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, val_images, val_labels): uint8 8x8 scans, deterministic."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # ink levels 0..16
    x_train, x_val, y_train, y_val = train_test_split(
        images, digits.target, test_size=VAL_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    return x_train, y_train.astype(np.int64), x_val, y_val.astype(np.int64)


def render(scan: np.ndarray, image_size: int) -> Image.Image:
    """An 8x8 scan as an RGB image of image_size x image_size (bicubic upscaling)."""
    return Image.fromarray(scan, mode="L").resize((image_size, image_size), Image.BICUBIC).convert("RGB")


def _write_imagefolder(out: Path, images: np.ndarray, labels: np.ndarray, image_size: int) -> None:
    for label in range(10):
        (out / str(label)).mkdir(parents=True)
    for n, (scan, label) in enumerate(zip(images, labels)):
        render(scan, image_size).save(out / str(label) / f"{n:04d}.png")


def _write_tfrecords(out: Path, split: str, images: np.ndarray, labels: np.ndarray,
                     image_size: int, shards: int) -> None:
    out.mkdir(parents=True)
    for shard in range(shards):
        with open(out / shard_name(split, shard, shards), "wb") as stream:
            for n in range(shard, len(images), shards):
                jpeg = io.BytesIO()
                render(images[n], image_size).save(jpeg, format="JPEG", quality=JPEG_QUALITY)
                write_record(stream, image_example(jpeg.getvalue(), f"{split}-{n:04d}.jpg", image_size,
                                                   image_size, int(labels[n]), str(int(labels[n]))))
            os.fsync(stream.fileno())


def _build(base: Path, image_size: int) -> None:
    x_train, y_train, x_val, y_val = split_digits()
    paths = _paths(base)
    _write_imagefolder(paths.train_dir, x_train, y_train, image_size)
    _write_imagefolder(paths.val_dir, x_val, y_val, image_size)
    for split, (x, y, shards) in {"train": (x_train, y_train, TRAIN_SHARDS),
                                  "validation": (x_val, y_val, VAL_SHARDS)}.items():
        _write_tfrecords(paths.data_dir / split, split, x, y, image_size, shards)
        ensure_indexes(sorted((paths.data_dir / split).iterdir()), paths.data_dir / INDEX_DIR / split)
    (paths.data_dir / CLASSES_FILE).write_text("".join(f"{c}\n" for c in range(10)))


@contextlib.contextmanager
def _build_lock(root: Path, name: str):
    """Serialise builders on one machine so concurrent ranks do not all build; the atomic
    rename below keeps it correct where flock does not work (some network file systems)."""
    with open(root / f".{name}.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


def materialise_digits(root: Path, image_size: int) -> DigitsPaths:
    """Build the digits data set under root once (idempotent, safe for concurrent ranks)."""
    if not isinstance(image_size, int) or not 8 <= image_size <= 1024:
        raise DataError(f"image_size: expected an integer between 8 and 1024, got {image_size!r}")
    root = Path(root).expanduser()
    base = digits_dir(root, image_size)
    if base.is_dir():
        return _paths(base)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _build_lock(root, base.name):
            if not base.is_dir():
                _build_atomically(root, base, image_size)
    except OSError as exc:  # read-only or full file system: the user's to fix, say where
        raise DataError(f"{root}: cannot write the digits data set ({exc.strerror or exc})") from None
    return _paths(base)


def _build_atomically(root: Path, base: Path, image_size: int) -> None:
    """Build in a temp dir beside base, then rename: a crash never leaves a half set at base."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{base.name}-", dir=root))
    try:
        _build(tmp, image_size)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared
        os.replace(tmp, base)
    except OSError:
        if not base.is_dir():  # lost the rename to a concurrent builder: theirs is as good
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

def default_root() -> Path:
    """$LARSCTL_DATA, default ~/.cache/larsctl/datasets."""
    return Path(os.environ.get("LARSCTL_DATA") or "~/.cache/larsctl/datasets").expanduser()
