"""The builtin digits data set: both layouts, counts, balance, DALI index files, CLI."""
from __future__ import annotations

import collections
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data import DataConfig, DataError, build_loaders, materialise_digits
from trainer.data.tfrecord import decode_example, read_records, tfrecord2idx_tool

TRAIN, VAL = 1437, 360  # 1797 scans split 80/20


def folder_counts(root: Path) -> dict[str, int]:
    return {d.name: len(list(d.glob("*.png"))) for d in sorted(root.iterdir())}


def record_labels(directory: Path) -> collections.Counter:
    labels = collections.Counter()
    for shard in sorted(directory.iterdir()):
        for payload in read_records(shard):
            example = decode_example(payload)
            labels[example["image/class/label"]] += 1
    return labels


def test_imagefolder_layout_counts_and_stratified_split(digits):
    train, val = folder_counts(digits.train_dir), folder_counts(digits.val_dir)
    assert sorted(train) == sorted(val) == [str(c) for c in range(10)]
    assert sum(train.values()) == TRAIN and sum(val.values()) == VAL
    for c in train:  # stratified: every class keeps its 80/20 share (within one image)
        assert abs(val[c] / (train[c] + val[c]) - 0.2) < 1 / (train[c] + val[c]) + 1e-9
    img = Image.open(next((digits.train_dir / "3").glob("*.png")))
    assert img.size == (32, 32) and img.mode == "RGB"


def test_tfrecords_hold_the_same_split_with_one_based_labels(digits):
    train, val = folder_counts(digits.train_dir), folder_counts(digits.val_dir)
    assert record_labels(digits.data_dir / "train") == {int(c) + 1: n for c, n in train.items()}
    assert record_labels(digits.data_dir / "validation") == {int(c) + 1: n for c, n in val.items()}
    example = decode_example(next(read_records(next((digits.data_dir / "validation").iterdir()))))
    jpeg = Image.open(io.BytesIO(example["image/encoded"]))
    assert jpeg.format == "JPEG" and jpeg.size == (32, 32)
    assert example["image/class/text"] == str(example["image/class/label"] - 1).encode()
    assert (digits.data_dir / "classes.txt").read_text().split() == [str(c) for c in range(10)]


def test_idx_files_are_dalis_and_missing_ones_are_regenerated(digits, tmp_path):
    for split in ("train", "validation"):
        records = sorted((digits.data_dir / split).iterdir())
        indexes = sorted((digits.data_dir / "idx_files" / split).iterdir())
        assert [p.name for p in indexes] == [p.name for p in records]
    # What DALI's own tool writes for a shard is exactly what we shipped.
    record = sorted((digits.data_dir / "train").iterdir())[0]
    subprocess.run([sys.executable, str(tfrecord2idx_tool()), str(record), str(tmp_path / "idx")], check=True)
    assert (tmp_path / "idx").read_text() == (digits.data_dir / "idx_files" / "train" / record.name).read_text()
    # A copy without idx_files gets them back when the DALI loader starts.
    copy = tmp_path / "tfrecord"
    shutil.copytree(digits.data_dir, copy)
    shutil.rmtree(copy / "idx_files")
    loaders = build_loaders(DataConfig(kind="dali", data_dir=str(copy), image_size=32, batch_size=32,
                                       val_batch_size=64, workers=1), 0, 1)
    assert loaders.train_samples == TRAIN and loaders.val_samples == VAL
    for split in ("train", "validation"):
        for index in (digits.data_dir / "idx_files" / split).iterdir():
            assert (copy / "idx_files" / split / index.name).read_text() == index.read_text()


def test_materialise_is_idempotent(digits, shared_data_dir):
    stamp = os.stat(digits.train_dir).st_mtime_ns
    again = materialise_digits(shared_data_dir, 32)
    assert again == digits and os.stat(again.train_dir).st_mtime_ns == stamp
    assert not [p for p in shared_data_dir.iterdir() if p.name.startswith(".digits-32-")]  # no temp dirs left


def test_concurrent_builders_and_the_cli(tmp_path):
    """Two real processes build the same (tiny) set at once; both succeed and agree."""
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "trainer.data.digits", "--out", str(out), "--image-size", "8"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and f"train-dir: {out}/digits-8/imagefolder/train" in outs[0][0]
    assert sum(folder_counts(out / "digits-8" / "imagefolder" / "train").values()) == TRAIN
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".lock")) == ["digits-8"]


def test_cli_rejects_a_bad_image_size(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainer.data.digits", "--out", str(tmp_path), "--image-size", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: image_size: expected an integer between 8 and 1024, got 3"]


def test_render_keeps_the_scans_ink(digits):
    """The 32 px image is the 8x8 scan upscaled: block means track the original ink levels."""
    from trainer.data.digits import render, split_digits

    x_train, _, _, _ = split_digits()
    big = np.asarray(render(x_train[0], 32))[:, :, 0].astype(float)
    blocks = big.reshape(8, 4, 8, 4).mean(axis=(1, 3))
    assert np.corrcoef(blocks.ravel(), x_train[0].ravel())[0, 1] > 0.95


def test_unwritable_root_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match=rf"^{blocker}/data: cannot write the digits data set \("):
        materialise_digits(blocker / "data", 8)
