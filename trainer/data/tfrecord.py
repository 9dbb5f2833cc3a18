"""TFRecord files in the ImageNet layout: a small writer, a reader and DALI's index tool.

No TensorFlow is needed. Records use TensorFlow's framing (little-endian uint64
length, masked CRC-32C of the length, payload, masked CRC-32C of the payload);
the CRC-32C comes from google-crc32c (C; ~3,000x faster than a pure-Python CRC,
which made converting ImageNet cost CPU-hours). No maintained TensorFlow-free
TFRecord writer exists that we would trust more than these few lines, so the
framing and the tiny, fixed `tf.train.Example` encoding are written here (tensorboard
does not ship example_pb2).

Features written (as in the ImageNet TFRecords the reference reads):
image/encoded (bytes, JPEG), image/format (b"JPEG"), image/filename, image/height,
image/width, image/class/label (int64, 1-based as in ImageNet: class index + 1),
image/class/text (the class folder name).
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

import google_crc32c

from .errors import DataError

# ImageNet TFRecords number classes from 1 (0 was "background"); we do the same.
LABEL_OFFSET = 1


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C: rotate right by 15 and add a constant (tensorflow/core/lib/hash/crc32c.h)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

# The reference's TFRecord layout under data_dir (what dali.find_split reads), shared with
# `larsctl data`: split directories, the DALI index directory, the class-name file
# (dali.class_count) and TensorFlow's shard names (build_imagenet_data.py's '%s-%.5d-of-%.5d').
SPLITS = ("train", "validation")
INDEX_DIR = "idx_files"
CLASSES_FILE = "classes.txt"
SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")


def shard_name(split: str, index: int, count: int) -> str:
    """TensorFlow's shard file name: shard_name("train", 0, 1024) == "train-00000-of-01024"."""
    return f"{split}-{index:05d}-of-{count:05d}"


def image_example(jpeg: bytes, filename: str, height: int, width: int, label: int, text: str) -> bytes:
    """The tf.train.Example of one image with the features listed above; `label` is the
    0-based class index (sorted class folders), stored + LABEL_OFFSET."""
    return encode_example({
        "image/encoded": jpeg,
        "image/format": b"JPEG",
        "image/filename": filename.encode(),
        "image/height": height,
        "image/width": width,
        "image/class/label": label + LABEL_OFFSET,
        "image/class/text": text.encode(),
    })


# --- protobuf wire format (only what tf.train.Example needs) ----------------------------

def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are ten-byte varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value: bytes | int) -> bytes:
    # Feature{bytes_list=1 | int64_list=3}; BytesList{value=1}; Int64List{packed value=1}
    if isinstance(value, bytes):
        return _field(1, _field(1, value))
    return _field(3, _field(1, _varint(value)))


def encode_example(features: dict[str, bytes | int]) -> bytes:
    """Serialise a tf.train.Example with one bytes or int64 value per feature."""
    entries = b"".join(
        _field(1, _field(1, key.encode()) + _field(2, _feature(value)))
        for key, value in sorted(features.items())
    )
    return _field(1, entries)  # Example{features=1}; Features{map feature=1}


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, bytes | int]]:
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _read_varint(buf, pos)
            yield number, buf[pos:pos + length]
            pos += length
        elif wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, value
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def decode_example(payload: bytes) -> dict[str, bytes | int]:
    """Inverse of encode_example (first value of each bytes/int64 feature)."""
    out: dict[str, bytes | int] = {}
    for _, features in _fields(payload):
        for _, entry in _fields(features):
            parts = dict(_fields(entry))
            key = parts[1].decode()
            kind, body = next(_fields(parts[2]))
            value = next(_fields(body))[1]
            if kind == 3 and isinstance(value, bytes):  # packed int64 list
                value = _read_varint(value, 0)[0]
            if isinstance(value, int) and value >= 1 << 63:
                value -= 1 << 64
            out[key] = value
    return out


# --- record framing ----------------------------------------------------------------------

def write_record(stream: BinaryIO, payload: bytes) -> None:
    header = struct.pack("<Q", len(payload))
    stream.write(header + struct.pack("<I", masked_crc32c(header)))
    stream.write(payload + struct.pack("<I", masked_crc32c(payload)))


def read_records(path: Path) -> Iterator[bytes]:
    """Yield the payloads of a TFRecord file, checking both CRCs."""
    with open(path, "rb") as stream:
        while header := stream.read(12):
            if len(header) < 12:
                raise DataError(f"{path}: truncated TFRecord header")
            (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != crc:
                raise DataError(f"{path}: bad TFRecord length checksum")
            payload, footer = stream.read(length), stream.read(4)
            if len(footer) < 4 or masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                raise DataError(f"{path}: bad or truncated TFRecord payload")
            yield payload


# --- DALI index files --------------------------------------------------------------------

def tfrecord2idx_tool() -> Path:
    """The tfrecord2idx script that the nvidia-dali wheel installs next to the interpreter."""
    beside = Path(sys.executable).parent / "tfrecord2idx"
    if beside.is_file():
        return beside
    found = shutil.which("tfrecord2idx")
    if found:
        return Path(found)
    raise DataError(
        "tfrecord2idx: DALI's index tool was not found next to "
        f"{sys.executable} or on PATH; install nvidia-dali in this environment"
    )


def make_index(record: Path, index: Path) -> None:
    """Write DALI's index for one TFRecord file with DALI's own tool (atomically)."""
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
    proc = subprocess.run(
        [sys.executable, str(tfrecord2idx_tool()), str(record), str(tmp)],
        capture_output=True, text=True,
    )
    # The tool prints "Not a valid TFRecord file" but still exits 0.
    if proc.returncode != 0 or proc.stdout.strip():
        tmp.unlink(missing_ok=True)
        message = (proc.stdout + proc.stderr).strip().splitlines()
        raise DataError(f"{record}: tfrecord2idx failed: {message[-1] if message else proc.returncode}")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, index)


def record_files(directory: Path) -> list[Path]:
    """The TFRecord shards of a directory (every regular, non-hidden file), sorted."""
    if not directory.is_dir():
        raise DataError(f"{directory}: TFRecord directory not found")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{directory}: no TFRecord files (expected shards such as train-00000-of-01024)")
    return files


def ensure_indexes(records: list[Path], index_dir: Path) -> list[Path]:
    """Index paths for `records` (same file names under index_dir), creating missing ones."""
    indexes = []
    for record in records:
        index = index_dir / record.name
        if not index.is_file():
            make_index(record, index)
        indexes.append(index)
    return indexes


def count_indexed(indexes: list[Path]) -> int:
    """Number of records listed in DALI index files (one line per record)."""
    return sum(sum(1 for line in open(index) if line.strip()) for index in indexes)
