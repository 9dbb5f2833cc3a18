"""`larsctl data convert`: ImageFolder (train/, val/) -> the reference's TFRecord layout.

    OUT/train/train-00000-of-01024 ...            OUT/idx_files/train/train-00000-of-01024 ...
    OUT/validation/validation-00000-of-00128 ...  OUT/idx_files/validation/...
    OUT/classes.txt (class folder names, label order)   OUT/manifest.json

What TensorFlow's build_imagenet_data.py writes, without TensorFlow: one tf.train.Example
per image with the features trainer/data/tfrecord.py lists (the trainer's DALI reader
takes image/encoded and image/class/label), labels = sorted class index + LABEL_OFFSET
(1), so the DALI and ImageFolder loaders give every file the same 0-based label. The
class list and every label come from the trainer's own ImageFolder scan.

Deterministic: the train images are shuffled with a seeded random.Random (val keeps the
ImageFolder order) and cut into contiguous shards, so shard contents depend on the file
listing, the shard counts and the seed only; RGB JPEGs are copied byte for byte and the
rest re-encoded by Pillow (larsctl/data/images.py), which is deterministic too.

Parallel and resumable: worker processes write whole shards, each to a hidden temporary
file (ignored by the trainer) that is fsynced, indexed by DALI's tfrecord2idx, recorded
under .larsctl/done/ and only then renamed. A rerun skips shards that exist, so after a
SIGKILL it writes exactly the missing shards, byte-identical to an uninterrupted run.

The TFRecord framing and the small tf.train.Example encoder are our own
(trainer/data/tfrecord.py): no maintained TensorFlow-free writer exists that we would
trust more than those ~60 lines checked against tensorboard's CRC and DALI's reader.
"""
from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from larsctl.data.common import (
    IMAGEFOLDER_SPLITS,
    MANIFEST_FORMAT,
    TFRECORD_SPLIT,
    OutputDir,
    Progress,
    read_json,
    run_tasks,
    write_json,
)
from larsctl.data.images import Undecodable, as_rgb_jpeg
from larsctl.errors import Failure, UserError
from larsctl.facts.jobdir import atomic_write
from trainer.data.errors import DataError
from trainer.data.tfrecord import (
    CLASSES_FILE,
    INDEX_DIR,
    LABEL_OFFSET,
    image_example,
    make_index,
    shard_name,
    write_record,
)
from trainer.fsio import TEMP_GLOB, fsync_dir

DEFAULT_TRAIN_SHARDS = 1024  # TensorFlow's script's defaults
DEFAULT_VAL_SHARDS = 128
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Listing:
    root: Path
    classes: list[str]
    samples: dict[str, list[tuple[str, int]]]  # ImageFolder split -> [(path, 0-based label)]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for split, samples in self.samples.items():
            for path, label in samples:
                digest.update(f"{split}\t{os.path.relpath(path, self.root)}\t{label}\n".encode())
        return digest.hexdigest()


def list_imagefolder(root: Path) -> Listing:
    """The trainer's own scan (torchvision's ImageFolder): same classes, same labels."""
    from trainer.data.imagefolder import check_same_classes, scan_folder

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: IMAGEFOLDER: no such directory; expected train/ and val/ class folders")
    try:
        train, val = (scan_folder(root / split, f"{split}_dir") for split in IMAGEFOLDER_SPLITS)
        check_same_classes(train, val, root / "train", root / "val")
    except DataError as exc:
        raise UserError(str(exc)) from None
    return Listing(root, list(train.classes), {"train": list(train.samples), "val": list(val.samples)})


# --- worker (runs in its own process) -----------------------------------------------------

@dataclass(frozen=True)
class ShardTask:
    name: str
    items: tuple[tuple[str, int, str], ...]  # (path, 0-based label, class name)
    out: Path
    index: Path
    record: Path


class _Hashing:
    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.raw.write(data)


def write_shard(task: ShardTask) -> dict:
    tmp = task.out.with_name(f".{task.out.name}.{os.getpid()}.tmp")
    digest, counts, left_out, reencoded = hashlib.sha256(), Counter(), [], 0
    try:
        with open(tmp, "wb") as raw:
            sink = _Hashing(raw, digest)
            for path, label, text in task.items:
                with open(path, "rb") as fh:
                    data = fh.read()
                try:
                    jpeg, height, width, changed = as_rgb_jpeg(data)
                except Undecodable as exc:
                    left_out.append({"path": path, "reason": str(exc)})
                    continue
                write_record(sink, image_example(jpeg, Path(path).name, height, width, label, text))
                counts[text] += 1
                reencoded += changed
            raw.flush()
            os.fsync(raw.fileno())
        try:
            make_index(tmp, task.index)  # DALI's tool; the index does not depend on the file name
        except DataError as exc:
            raise Failure(str(exc)) from None
        result = {"name": task.name, "records": sum(counts.values()), "bytes": tmp.stat().st_size,
                  "sha256": digest.hexdigest(), "classes": dict(sorted(counts.items())),
                  "left_out": left_out, "reencoded": reencoded}
        write_json(task.record, result)
        os.replace(tmp, task.out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


# --- the command ---------------------------------------------------------------------------

@dataclass
class Summary:
    out: Path
    classes: list[str]
    splits: dict[str, dict]              # TFRecord split -> {"images", "classes", "shards"}
    left_out: list[dict]
    reencoded: int = 0
    shards_written: int = 0
    shards_skipped: int = 0


def plan_shards(listing: Listing, out: OutputDir, train_shards: int, val_shards: int,
                seed: int) -> list[ShardTask]:
    tasks = []
    for split, count in zip(IMAGEFOLDER_SPLITS, (train_shards, val_shards)):
        samples = listing.samples[split]
        option = f"--{split}-shards"
        if count > len(samples):
            raise UserError(f"{option} {count}: more shards than the {len(samples):,} images in "
                            f"{listing.root / split}; expected at most {len(samples):,}")
        if split == "train":
            samples = list(samples)
            random.Random(seed).shuffle(samples)
        tf_split = TFRECORD_SPLIT[split]
        for i in range(count):
            name = shard_name(tf_split, i, count)
            part = samples[i * len(samples) // count:(i + 1) * len(samples) // count]
            tasks.append(ShardTask(
                name, tuple((path, label, listing.classes[label]) for path, label in part),
                out.root / tf_split / name, out.root / INDEX_DIR / tf_split / name,
                out.done(tf_split, f"{name}.json")))
    return tasks


def _remove_stale_temporaries(out: OutputDir) -> None:
    for directory in [out.root / s for s in TFRECORD_SPLIT.values()] + \
                     [out.root / INDEX_DIR / s for s in TFRECORD_SPLIT.values()]:
        if directory.is_dir():
            for path in directory.glob(TEMP_GLOB):
                path.unlink(missing_ok=True)


def convert(imagefolder: Path, out: Path, *, train_shards: int = DEFAULT_TRAIN_SHARDS,
            val_shards: int = DEFAULT_VAL_SHARDS, workers: int = 1, seed: int = DEFAULT_SEED,
            echo=print) -> Summary:
    target = OutputDir(Path(out))
    target.check("convert")  # before scanning a big tree
    listing = list_imagefolder(Path(imagefolder))
    tasks = plan_shards(listing, target, train_shards, val_shards, seed)
    echo(f"{listing.root}: {len(listing.classes):,} classes, {len(listing.samples['train']):,} train and "
         f"{len(listing.samples['val']):,} val images -> {train_shards} + {val_shards} shards")
    claim = {"command": "convert", "listing_sha256": listing.fingerprint(), "classes": len(listing.classes),
             "train_shards": train_shards, "val_shards": val_shards, "seed": seed}
    with target.claimed(claim):
        _remove_stale_temporaries(target)
        todo = []
        for task in tasks:
            if task.out.is_file() and task.record.is_file():
                if not task.index.is_file():  # deleted by hand: DALI's tool makes it again
                    make_index(task.out, task.index)
                continue
            todo.append(task)
        for task in todo:
            for directory in (task.out.parent, task.index.parent, task.record.parent):
                directory.mkdir(parents=True, exist_ok=True)
        summary = Summary(target.root, listing.classes, {}, [], shards_written=len(todo),
                          shards_skipped=len(tasks) - len(todo))
        done = sum(len(t.items) for t in tasks) - sum(len(t.items) for t in todo)
        with Progress("convert", sum(len(t.items) for t in tasks), "img", initial=done) as bar:
            def finished(task: ShardTask, result: dict) -> None:
                for item in result["left_out"]:
                    bar.write(f"Warning: {item['path']}: cannot decode ({item['reason']}); left out")
                bar.update(len(task.items))
            try:  # the biggest shards first, so no worker is left with a long one at the end
                run_tasks(write_shard, sorted(todo, key=lambda t: -len(t.items)), workers, finished)
            except BaseException:
                _remove_stale_temporaries(target)  # what the stopped workers were writing
                raise
        for directory in {t.out.parent for t in tasks} | {t.index.parent for t in tasks}:
            fsync_dir(directory)
        _finish(target, listing, claim, tasks, summary)
    return summary


def _finish(target: OutputDir, listing: Listing, claim: dict, tasks: list[ShardTask], summary: Summary) -> None:
    splits: dict[str, dict] = {}
    for task in tasks:
        record = read_json(task.record, "a finished-shard record")
        split = splits.setdefault(task.out.parent.name, {"images": 0, "classes": Counter(), "shards": {}})
        split["images"] += record["records"]
        split["classes"].update(record["classes"])
        split["shards"][task.name] = {k: record[k] for k in ("records", "bytes", "sha256")}
        summary.left_out += record["left_out"]
        summary.reencoded += record["reencoded"]
    for split in splits.values():
        split["classes"] = dict(sorted(split["classes"].items()))
    summary.splits = splits
    summary.left_out.sort(key=lambda item: item["path"])
    atomic_write(target.root / CLASSES_FILE, "".join(f"{name}\n" for name in listing.classes))
    write_json(target.manifest, {
        "format": MANIFEST_FORMAT,
        "layout": "tfrecord",
        "written_by": "larsctl data convert",
        "source": str(listing.root.resolve()),
        **{k: v for k, v in claim.items() if k != "command"},
        "label_offset": LABEL_OFFSET,
        "classes": listing.classes,
        "splits": splits,
        "left_out": summary.left_out,
        "reencoded": summary.reencoded,
    })
