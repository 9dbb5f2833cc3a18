"""verify catches what changed: a flipped byte, a missing or stale index, a class missing from val."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.data.helpers import cli
from trainer.data import materialise_digits


@pytest.fixture
def tfrecords(converted, tmp_path) -> Path:
    copy = tmp_path / "tfrecord"
    shutil.copytree(converted, copy)
    return copy


@pytest.fixture
def imagefolder(prepared, tmp_path) -> Path:
    copy = tmp_path / "imagenet"
    shutil.copytree(prepared, copy)
    return copy


def mismatches(result) -> list[str]:
    return [line.removeprefix("mismatch: ") for line in result.stderr.splitlines() if line.startswith("mismatch: ")]


def test_a_flipped_byte_in_a_shard(tfrecords):
    shard = tfrecords / "train" / "train-00001-of-00004"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    r = cli("verify", tfrecords)
    assert r.exit_code == 1
    (line,) = mismatches(r)
    assert line.startswith("train/train-00001-of-00004: sha256 ") and line.endswith(
        "differs from manifest.json (" + line.split("(")[-1])
    assert "the shard changed since it was written" in line
    assert r.stderr.strip().splitlines()[-1] == f"Error: {tfrecords}: 1 mismatch(es) in the tfrecord data set"
    r = cli("verify", tfrecords, "--full")  # reading every record finds the record too
    assert r.exit_code == 1
    assert any(m.startswith("train/train-00001-of-00004 record ") and m.endswith(": bad or truncated TFRecord payload")
               for m in mismatches(r)), r.stderr


def test_a_missing_and_a_stale_index_file(tfrecords):
    (tfrecords / "idx_files" / "validation" / "validation-00001-of-00002").unlink()
    index = tfrecords / "idx_files" / "train" / "train-00002-of-00004"
    index.write_text("".join(index.read_text().splitlines(keepends=True)[:-1]))
    r = cli("verify", tfrecords)
    assert r.exit_code == 1
    assert sorted(mismatches(r)) == [
        "idx_files/train/train-00002-of-00004: does not match its shard (5 entries; tfrecord2idx finds 6 records)",
        "idx_files/validation/validation-00001-of-00002: missing (DALI needs it; `larsctl data convert` "
        "again writes it)",
    ]


def test_a_missing_shard(tfrecords):
    (tfrecords / "train" / "train-00003-of-00004").unlink()
    r = cli("verify", tfrecords)
    assert r.exit_code == 1
    assert mismatches(r) == [f"{tfrecords}/train/train-00003-of-00004: missing",
                             f"{tfrecords}/train/train-00003-of-00004: listed in manifest.json but missing"]


def test_a_class_missing_from_val(imagefolder, archives):
    wnid = archives[1].classes[1]
    shutil.rmtree(imagefolder / "val" / wnid)
    r = cli("verify", imagefolder)
    assert r.exit_code == 1
    assert mismatches(r) == [f"{imagefolder}/val/{wnid}: 0 images, manifest.json says 3",
                             f"val: class {wnid} missing (train has 7 images of it)"]


def test_an_undecodable_image_in_imagefolder_with_full(imagefolder):
    image = sorted((imagefolder / "train").rglob("*.JPEG"))[3]
    image.write_bytes(image.read_bytes()[:200])
    assert cli("verify", imagefolder).exit_code == 0  # only the first image of each class by default
    r = cli("verify", imagefolder, "--full")
    assert r.exit_code == 1
    (line,) = mismatches(r)
    assert line.startswith(f"{image}: cannot decode (")  # Pillow: "Truncated File Read"


def test_tfrecords_not_written_by_convert_are_checked_without_a_manifest(shared_data_dir):
    """The trainer's builtin digits set: TFRecords with DALI indexes, classes.txt, no manifest."""
    digits = materialise_digits(shared_data_dir, 32)
    r = cli("verify", digits.data_dir)
    assert r.exit_code == 0, r.output
    assert "no manifest.json: counts and checksums are not compared" in r.stdout
    assert "train: 1,437 records in 4 shards" in r.stdout and "validation: 360 records in 2 shards" in r.stdout
