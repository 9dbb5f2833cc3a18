"""`larsctl data prepare`: the official ILSVRC2012 archives -> the ImageFolder layout.

    ARCHIVES_DIR/ILSVRC2012_img_train.tar   1,000 per-class tars n01440764.tar, ...
    ARCHIVES_DIR/ILSVRC2012_img_val.tar     ILSVRC2012_val_00000001.JPEG, ...
    ARCHIVES_DIR/<validation labels>        see larsctl/data/labels.py
 -> OUT/train/<wnid>/<image>.JPEG  OUT/val/<wnid>/ILSVRC2012_val_NNNNNNNN.JPEG  OUT/manifest.json

Nothing is unpacked to disk first. The two big archives are read member by member with
tarfile ("r:" lists the headers and seeks over the data; a 140 GB train archive has
1,000 members), and each per-class tar is streamed with tarfile's streaming mode ("r|")
straight out of the big one. Workers take one class each (or a slice of the validation
images), so reading, decoding and writing run in parallel, and a rerun seeks past
finished classes instead of reading them again.

Every image is decoded once with Pillow; one that does not decode is reported by its
path inside the archives and left out (the trainer would stop on it hours into a run).
Image bytes are written unchanged (the trainer converts CMYK and grayscale to RGB when
it loads them; `larsctl data convert` re-encodes them for DALI).

Resumable and crash-safe: a class is written under OUT/.larsctl/partial/ and renamed to
OUT/train/<wnid> once all its files are on disk (fsync), so a class directory in train/
is always complete and a rerun skips it. Validation images go to partial/val/ and are
skipped on a rerun when their size matches the archive's; val/ appears, by rename, only
when every image is there. manifest.json is written last.
"""
from __future__ import annotations

import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from larsctl.errors import UserError
from larsctl.data.common import (MANIFEST_FORMAT, OutputDir, Progress, fsync_files, read_json, run_tasks,
                                 sha256_file, write_json)
from larsctl.data.images import decode_problem
from larsctl.data.labels import VAL_IMAGE, ValLabels, find_labels, read_val_labels
from trainer.fsio import fsync_dir

TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
CLASS_TAR = re.compile(r"^(?:\./)?(n\d{8})\.tar$")  # some re-packed archives say ./n01440764.tar
# A bare file name (no directories, no leading dot): nothing is written outside OUT.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
VAL_SLICE = 1000  # validation images per task


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data in the archive
    size: int


@dataclass
class Summary:
    out: Path
    labels: ValLabels
    counts: dict[str, dict[str, int]]            # split -> class -> images
    left_out: list[dict[str, str]]
    classes_written: int = 0
    classes_skipped: int = 0

    def images(self, split: str) -> int:
        return sum(self.counts[split].values())


def list_archive(path: Path, what: str) -> list[Member]:
    """The regular-file members of a tar (headers only: "r:" seeks over the data)."""
    try:
        with tarfile.open(path, "r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise UserError(f"{path}: not a readable tar archive ({exc}); expected {what}") from None
    out = []
    for m in members:
        if not m.isfile():
            raise UserError(f"{path}: member {m.name!r} is not a regular file; expected {what}")
        out.append(Member(m.name, m.offset_data, m.size))
    if not out:
        raise UserError(f"{path}: empty archive; expected {what}")
    last = out[-1]
    if last.offset + last.size > path.stat().st_size:
        raise UserError(f"{path}: truncated: member {last.name} ends past the end of the file "
                        "(an incomplete download?)")
    return out


class _Window:
    """`size` bytes of an open file from its current position, for tarfile's streaming mode."""

    def __init__(self, raw, size: int):
        self.raw, self.left = raw, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.raw.read(n)
        self.left -= len(data)
        return data


# --- workers (run in their own processes) -----------------------------------------------

@dataclass(frozen=True)
class ClassTask:
    archive: Path
    wnid: str
    member: Member
    partial: Path
    final: Path
    record: Path


def extract_class(task: ClassTask) -> dict:
    """Stream one per-class tar out of the train archive into partial/, then rename it."""
    where = f"{task.archive.name}/{task.member.name}"
    shutil.rmtree(task.partial, ignore_errors=True)
    task.partial.mkdir(parents=True)
    written, left_out = [], []
    try:
        with open(task.archive, "rb") as raw:
            raw.seek(task.member.offset)
            with tarfile.open(fileobj=_Window(raw, task.member.size), mode="r|") as inner:
                for member in inner:
                    name = member.name.removeprefix("./")
                    path = f"{where}/{name}"
                    if not member.isfile():
                        raise UserError(f"{task.archive}: {path}: not a regular file; expected the "
                                        "class's images only")
                    if not SAFE_NAME.match(name):
                        raise UserError(f"{task.archive}: {path}: expected a plain file name such as "
                                        f"{task.wnid}_10026.JPEG")
                    data = inner.extractfile(member).read()
                    if len(data) != member.size:
                        raise tarfile.ReadError("unexpected end of data")
                    reason = decode_problem(data)
                    if reason:
                        left_out.append({"path": path, "reason": reason})
                        continue
                    with open(task.partial / name, "xb") as fh:
                        fh.write(data)
                    written.append(task.partial / name)
        fsync_files(written)
        fsync_dir(task.partial)
        result = {"wnid": task.wnid, "images": len(written), "left_out": left_out}
        task.record.parent.mkdir(parents=True, exist_ok=True)
        write_json(task.record, result)  # before the rename: a finished class always has it
        task.final.parent.mkdir(parents=True, exist_ok=True)
        task.partial.rename(task.final)
        fsync_dir(task.final.parent)
    except (tarfile.TarError, EOFError) as exc:
        shutil.rmtree(task.partial, ignore_errors=True)
        raise UserError(f"{task.archive}: {where}: corrupt or truncated tar ({exc})") from None
    except FileExistsError as exc:
        shutil.rmtree(task.partial, ignore_errors=True)
        raise UserError(f"{task.archive}: {where}: {Path(exc.filename).name} is in the tar twice") from None
    except BaseException:
        shutil.rmtree(task.partial, ignore_errors=True)  # a full disk gets its space back
        raise
    return result


@dataclass(frozen=True)
class ValTask:
    archive: Path
    items: tuple[tuple[Member, str], ...]  # (member, wnid)
    partial: Path


def extract_val(task: ValTask) -> dict:
    """Copy a slice of the validation images into partial/<wnid>/ (skipping finished ones)."""
    done, left_out = [], []
    with open(task.archive, "rb") as raw:
        for member, wnid in task.items:
            name = member.name.removeprefix("./")
            dest = task.partial / wnid / name
            try:
                if dest.stat().st_size == member.size:  # written by an earlier run
                    done.append(dest)
                    continue
            except FileNotFoundError:
                pass
            raw.seek(member.offset)
            data = raw.read(member.size)
            if len(data) != member.size:
                raise UserError(f"{task.archive}: {name}: truncated archive")
            reason = decode_problem(data)
            if reason:
                left_out.append({"path": f"{task.archive.name}/{name}", "reason": reason})
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(dest, "wb") as fh:
                    fh.write(data)
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            done.append(dest)
    fsync_files(done)
    return {"left_out": left_out}


# --- the command ---------------------------------------------------------------------------

def _inputs(archives_dir: Path) -> tuple[Path, Path]:
    if not archives_dir.is_dir():
        raise UserError(f"{archives_dir}: ARCHIVES_DIR: not a directory; expected the directory holding "
                        f"{TRAIN_ARCHIVE}, {VAL_ARCHIVE} and the validation labels")
    paths = archives_dir / TRAIN_ARCHIVE, archives_dir / VAL_ARCHIVE
    for path, what in zip(paths, ("train archive (1,000 per-class tars such as n01440764.tar)",
                                  "validation archive (ILSVRC2012_val_00000001.JPEG, ...)")):
        if not path.is_file():
            raise UserError(f"{path}: not found; expected the official {what}")
    return paths


def _train_classes(path: Path) -> dict[str, Member]:
    what = "the official train archive: per-class tars such as n01440764.tar"
    classes: dict[str, Member] = {}
    for member in list_archive(path, what):
        match = CLASS_TAR.match(member.name)
        if not match:
            raise UserError(f"{path}: member {member.name!r}: expected per-class tars named like n01440764.tar")
        classes[match.group(1)] = member
    return classes


def _val_images(path: Path) -> dict[int, Member]:
    what = "the official validation archive: ILSVRC2012_val_00000001.JPEG, ..."
    images: dict[int, Member] = {}
    for member in list_archive(path, what):
        match = VAL_IMAGE.match(member.name.removeprefix("./"))
        if not match:
            raise UserError(f"{path}: member {member.name!r}: expected images named like "
                            "ILSVRC2012_val_00000001.JPEG")
        number = int(match.group(1))
        if number in images:
            raise UserError(f"{path}: member {member.name!r} is in the archive twice")
        images[number] = member
    if sorted(images) != list(range(1, len(images) + 1)):
        gap = next(n for n in range(1, len(images) + 2) if n not in images)
        raise UserError(f"{path}: ILSVRC2012_val_{gap:08d}.JPEG is missing; expected images numbered "
                        f"1..{len(images)}")
    return images


def prepare(archives_dir: Path, out: Path, *, val_labels: Path | None = None, meta: Path | None = None,
            workers: int = 1, echo=print) -> Summary:
    """Write OUT in the ImageFolder layout; returns what was done (see Summary)."""
    archives_dir, out = Path(archives_dir), Path(out)
    train_tar, val_tar = _inputs(archives_dir)
    OutputDir(out).check("prepare")  # before reading the archives' headers
    labels_path = Path(val_labels) if val_labels else find_labels(archives_dir)
    classes = _train_classes(train_tar)
    val = _val_images(val_tar)
    labels = read_val_labels(labels_path, Path(meta) if meta else None, len(val))
    for number, wnid in sorted(labels.wnids.items()):
        if number not in val:
            raise UserError(f"{labels_path}: ILSVRC2012_val_{number:08d}: no such image in {val_tar}")
        if wnid not in classes:
            raise UserError(f"{labels_path}: ILSVRC2012_val_{number:08d}: class {wnid} is not in {train_tar} "
                            f"(its classes: {', '.join(sorted(classes)[:3])}, ...)")
    echo(f"train: {len(classes):,} classes in {train_tar.name}; val: {len(val):,} images in {val_tar.name}, "
         f"labels from {labels_path.name} ({labels.kind})")
    claim = {"command": "prepare",
             "train_archive": [train_tar.name, train_tar.stat().st_size],
             "val_archive": [val_tar.name, val_tar.stat().st_size],
             "val_labels": [labels_path.name, sha256_file(labels_path)]}
    target = OutputDir(out)
    summary = Summary(out, labels, {}, [])
    with target.claimed(claim):
        partial = target.state / "partial"
        shutil.rmtree(partial / "train", ignore_errors=True)  # classes a killed run left half-written
        _train(target, train_tar, classes, workers, summary)
        _val(target, val_tar, val, labels, workers, summary)
        _finish(target, claim, sorted(classes), summary)
        shutil.rmtree(partial, ignore_errors=True)
    return summary


def _train(target: OutputDir, archive: Path, classes: dict[str, Member], workers: int, summary: Summary) -> None:
    tasks, done_bytes = [], 0
    for wnid, member in sorted(classes.items(), key=lambda kv: kv[1].offset):  # archive order
        final, record = target.root / "train" / wnid, target.done("train", f"{wnid}.json")
        if final.is_dir() and record.is_file():
            done_bytes += member.size
            continue
        if final.exists():  # a class without its record is not ours to trust
            shutil.rmtree(final)
        tasks.append(ClassTask(archive, wnid, member, target.state / "partial" / "train" / wnid, final, record))
    summary.classes_skipped = len(classes) - len(tasks)
    summary.classes_written = len(tasks)
    total = sum(m.size for m in classes.values())
    with Progress("prepare train", total, "B", initial=done_bytes, scale=True) as bar:
        def finished(task: ClassTask, result: dict) -> None:
            for item in result["left_out"]:
                bar.write(f"Warning: {item['path']}: cannot decode ({item['reason']}); left out")
            bar.update(task.member.size)
        try:
            run_tasks(extract_class, tasks, workers, finished)
        except BaseException:
            shutil.rmtree(target.state / "partial" / "train", ignore_errors=True)  # the stopped workers' classes
            raise


def _val(target: OutputDir, archive: Path, images: dict[int, Member], labels: ValLabels, workers: int,
         summary: Summary) -> None:
    final = target.root / "val"
    if final.is_dir():
        return
    partial = target.state / "partial" / "val"
    partial.mkdir(parents=True, exist_ok=True)
    ordered = [(images[n], labels.wnids[n]) for n in sorted(images, key=lambda n: images[n].offset)]
    tasks = [ValTask(archive, tuple(ordered[i:i + VAL_SLICE]), partial) for i in range(0, len(ordered), VAL_SLICE)]
    left_out: list[dict] = []
    with Progress("prepare val", sum(m.size for m in images.values()), "B", scale=True) as bar:
        def finished(task: ValTask, result: dict) -> None:
            for item in result["left_out"]:
                bar.write(f"Warning: {item['path']}: cannot decode ({item['reason']}); left out")
            left_out.extend(result["left_out"])
            bar.update(sum(m.size for m, _ in task.items))
        run_tasks(extract_val, tasks, workers, finished)
    for wnid_dir in partial.iterdir():
        fsync_dir(wnid_dir)
    record = target.done("val.json")
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, {"left_out": sorted(left_out, key=lambda item: item["path"])})
    fsync_dir(partial)
    partial.rename(final)
    fsync_dir(target.root)


def _count(directory: Path) -> dict[str, int]:
    return {d.name: sum(1 for f in d.iterdir() if f.is_file()) for d in sorted(directory.iterdir()) if d.is_dir()}


def _finish(target: OutputDir, claim: dict, classes: list[str], summary: Summary) -> None:
    left_out = []
    train_counts = {}
    for wnid in classes:
        record = read_json(target.done("train", f"{wnid}.json"), "a finished-class record")
        train_counts[wnid] = record["images"]
        left_out += record["left_out"]
    left_out += read_json(target.done("val.json"), "the validation record")["left_out"]
    summary.counts = {"train": train_counts, "val": _count(target.root / "val")}
    summary.left_out = sorted(left_out, key=lambda item: item["path"])
    write_json(target.manifest, {
        "format": MANIFEST_FORMAT,
        "layout": "imagefolder",
        "written_by": "larsctl data prepare",
        "source": claim,
        "classes": classes,
        "splits": {split: {"images": summary.images(split), "classes": counts}
                   for split, counts in summary.counts.items()},
        "left_out": summary.left_out,
    })
