"""`larsctl data verify`: is a data set directory what the trainer needs, and unchanged?

ImageFolder (train/, val/): the class folders of train and val agree, none is empty, the
images per class match manifest.json (when `larsctl data prepare` wrote one), and a
sample decodes: the first image of every class, or every image with full=True.

TFRecord (train/, validation/, idx_files/): shards are named and numbered like
TensorFlow's (train-00000-of-01024 ... all present), every shard has its DALI index and
the index is what DALI's tfrecord2idx writes for that shard today, every shard's sha256
matches manifest.json (a flipped byte is caught), record counts and classes agree with
the manifest, and a sample decodes: the first record of every shard (CRC checked, a
tf.train.Example with a label in 1..classes whose JPEG decodes), or every record with
full=True (then the counts per class are recounted from the labels too).

Each problem is one line naming where (file, shard, record, class) and what differs.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from larsctl.data.common import (IMAGEFOLDER_SPLITS, MANIFEST, Progress, detect_layout, read_json, run_tasks,
                                 sha256_file)
from larsctl.data.images import decode_problem
from trainer.data.errors import DataError
from trainer.data.tfrecord import (CLASSES_FILE, INDEX_DIR, LABEL_OFFSET, SHARD_NAME, SPLITS, decode_example,
                                   make_index, read_records, shard_name)


@dataclass
class Report:
    root: Path
    layout: str
    lines: list[str] = field(default_factory=list)      # what was checked
    problems: list[str] = field(default_factory=list)   # what differs, one line each

    def problem(self, text: str) -> None:
        self.problems.append(text)


def verify(root: Path, *, full: bool = False, workers: int = 1) -> Report:
    root = Path(root)
    layout = detect_layout(root)
    report = Report(root, layout)
    manifest = read_json(root / MANIFEST, "a larsctl data manifest") if (root / MANIFEST).is_file() else None
    if manifest is not None and not _well_formed(manifest):
        report.problem(f"{root / MANIFEST}: not the manifest larsctl data writes (splits: {{split: {{classes, "
                       "shards}}}}, classes: [...]); compared with nothing")
        manifest = None
    if manifest is None:
        report.lines.append(f"no {MANIFEST}: counts and checksums are not compared (not written by larsctl data)")
    if layout == "imagefolder":
        _verify_imagefolder(report, manifest, full, workers)
    else:
        _verify_tfrecord(report, manifest, full, workers)
    return report


def _well_formed(manifest: dict) -> bool:
    splits, classes = manifest.get("splits", {}), manifest.get("classes", [])
    return (isinstance(splits, dict) and isinstance(classes, list)
            and all(isinstance(v, dict) and isinstance(v.get("classes", {}), dict)
                    and isinstance(v.get("shards", {}), dict)
                    and all(isinstance(e, dict) for e in v.get("shards", {}).values()) for v in splits.values()))


def _expected(manifest: dict | None, split: str) -> dict[str, int] | None:
    if manifest is None:
        return None
    classes = manifest.get("splits", {}).get(split, {}).get("classes")
    return classes if isinstance(classes, dict) else None


def _compare_counts(report: Report, where: str, found: dict[str, int], expected: dict[str, int] | None) -> None:
    if expected is None:
        return
    for name in sorted(set(found) | set(expected)):
        if found.get(name, 0) != expected.get(name, 0):
            report.problem(f"{where}/{name}: {found.get(name, 0):,} images, {MANIFEST} says {expected.get(name, 0):,}")


def _compare_class_sets(report: Report, names: tuple[str, str], sets: tuple[dict[str, int], dict[str, int]]) -> None:
    (train_name, val_name), (train, val) = names, sets
    for name in sorted(set(train) - set(val)):
        report.problem(f"{val_name}: class {name} missing ({train_name} has {train[name]:,} images of it)")
    for name in sorted(set(val) - set(train)):
        report.problem(f"{train_name}: class {name} missing ({val_name} has {val[name]:,} images of it)")


# --- ImageFolder ---------------------------------------------------------------------------

def _check_images(paths: tuple[str, ...]) -> list[str]:
    problems = []
    for path in paths:
        with open(path, "rb") as fh:
            reason = decode_problem(fh.read())
        if reason:
            problems.append(f"{path}: cannot decode ({reason})")
    return problems


def _verify_imagefolder(report: Report, manifest: dict | None, full: bool, workers: int) -> None:
    from torchvision.datasets.folder import IMG_EXTENSIONS  # the files the trainer's ImageFolder takes

    root, counts, files = report.root, {}, {}
    for split in IMAGEFOLDER_SPLITS:
        counts[split] = {}
        directory = root / split
        if not directory.is_dir():
            report.problem(f"{directory}: missing (expected class folders {split}/<class>/<image>)")
            continue
        for cls in sorted(p for p in directory.iterdir() if p.is_dir()):
            images = sorted(str(p) for p in cls.iterdir() if p.name.lower().endswith(IMG_EXTENSIONS) and p.is_file())
            counts[split][cls.name] = len(images)
            files[(split, cls.name)] = images
            if not images:
                report.problem(f"{cls}: empty class folder (the trainer's ImageFolder refuses it)")
        _compare_counts(report, f"{root / split}", counts[split], _expected(manifest, split))
        total = sum(counts[split].values())
        report.lines.append(f"{split}: {total:,} images in {len(counts[split]):,} classes")
    _compare_class_sets(report, IMAGEFOLDER_SPLITS, (counts["train"], counts["val"]))
    classes = sorted(counts["train"])
    report.lines.append(f"labels: 0..{len(classes) - 1} by sorted class folder (1..{len(classes)} in TFRecords)")
    chunks = [tuple(images if full else images[:1]) for images in files.values() if images]
    sample = sum(len(c) for c in chunks)
    with Progress("verify images", sample, "img") as bar:
        def finished(task: tuple, problems: list[str]) -> None:
            report.problems.extend(problems)
            bar.update(len(task))
        run_tasks(_check_images, chunks, workers, finished)
    report.lines.append(f"decoded {'every image' if full else 'the first image of every class'}: {sample:,}")


# --- TFRecord ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardCheck:
    split: str
    shard: Path
    index: Path
    sha256: str | None
    classes: int
    full: bool


def check_shard(task: ShardCheck) -> dict:
    """sha256 and index of one shard, and its records: the first one, or all with full.

    Records are counted from the index DALI's tool writes for the shard now (it walks the
    framing without the CRCs); their CRCs (pure Python, ~17 ms per ImageNet image) are
    checked where they are read: the first record, or every record with full."""
    name, problems = f"{task.split}/{task.shard.name}", []
    counts: Counter = Counter()
    if task.sha256 is not None:
        digest = sha256_file(task.shard)
        if digest != task.sha256:
            problems.append(f"{name}: sha256 {digest[:12]}... differs from {MANIFEST} ({task.sha256[:12]}...): "
                            "the shard changed since it was written")
    records = None
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / task.shard.name
        try:
            make_index(task.shard, fresh)
            theirs = fresh.read_bytes()
            records = len(theirs.splitlines())
        except DataError as exc:
            problems.append(f"{name}: {str(exc).split(': ', 1)[-1]}")
        if not task.index.is_file():
            problems.append(f"{INDEX_DIR}/{name}: missing (DALI needs it; `larsctl data convert` again writes it)")
        elif records is not None and task.index.read_bytes() != theirs:
            problems.append(f"{INDEX_DIR}/{name}: does not match its shard "
                            f"({len(task.index.read_bytes().splitlines()):,} entries; tfrecord2idx finds "
                            f"{records:,} records)")
    n = -1
    try:
        for n, payload in enumerate(read_records(task.shard)):
            where = f"{name} record {n}"
            problems += _check_example(payload, where, task.classes, counts)
            if not task.full:
                break
    except DataError as exc:
        problems.append(f"{name} record {n + 1}: {str(exc).split(': ', 1)[-1]}")
    return {"records": records, "labels": dict(counts), "problems": problems}


def _check_example(payload: bytes, where: str, classes: int, counts: Counter) -> list[str]:
    try:
        example = decode_example(payload)
    except (ValueError, IndexError, KeyError, StopIteration, UnicodeDecodeError) as exc:
        return [f"{where}: not a tf.train.Example ({exc or type(exc).__name__})"]
    problems = []
    label, image = example.get("image/class/label"), example.get("image/encoded")
    if not isinstance(label, int) or not LABEL_OFFSET <= label < classes + LABEL_OFFSET:
        problems.append(f"{where}: image/class/label {label!r} out of range "
                        f"{LABEL_OFFSET}..{classes + LABEL_OFFSET - 1}")
    else:
        counts[label - LABEL_OFFSET] += 1
    if not isinstance(image, bytes):
        problems.append(f"{where}: no image/encoded bytes")
    elif reason := decode_problem(image):
        filename = example.get("image/filename", b"?")
        filename = filename.decode(errors="replace") if isinstance(filename, bytes) else filename
        problems.append(f"{where} ({filename}): image does not decode ({reason})")
    return problems


def _shards(report: Report, split: str) -> list[Path]:
    directory = report.root / split
    if not directory.is_dir():
        report.problem(f"{directory}: missing (expected shards such as {shard_name(split, 0, 128)})")
        return []
    shards = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    counts = set()
    for shard in shards:
        match = SHARD_NAME.match(shard.name)
        if not match or match.group("split") != split:
            report.problem(f"{shard}: not a shard name like {shard_name(split, 0, 128)}")
            continue
        counts.add(int(match.group("count")))
    if len(counts) > 1:
        report.problem(f"{directory}: shards of different sets ({', '.join(f'-of-{c:05d}' for c in sorted(counts))})")
    elif counts:
        count = counts.pop()
        names = {p.name for p in shards}
        for i in range(count):
            if shard_name(split, i, count) not in names:
                report.problem(f"{directory}/{shard_name(split, i, count)}: missing")
    if not shards:
        report.problem(f"{directory}: no shards")
    return [s for s in shards if SHARD_NAME.match(s.name)]


def _verify_tfrecord(report: Report, manifest: dict | None, full: bool, workers: int) -> None:
    root = report.root
    classes_file = root / CLASSES_FILE
    names = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()] \
        if classes_file.is_file() else (manifest or {}).get("classes")
    if not names:
        report.problem(f"{classes_file}: missing (the trainer counts classes with it; "
                       "`larsctl data convert` writes it)")
        names = []
    elif manifest is not None and manifest.get("classes") not in (None, names):
        report.problem(f"{classes_file}: class names differ from {MANIFEST}")
    checks, expected_shards = [], {}
    for split in SPLITS:
        expected_shards[split] = (manifest or {}).get("splits", {}).get(split, {}).get("shards")
        shards = _shards(report, split)
        listed = expected_shards[split] or {}
        if manifest is not None:
            for name in sorted(set(listed) - {s.name for s in shards}):
                report.problem(f"{root / split / name}: listed in {MANIFEST} but missing")
            for shard in shards:
                if shard.name not in listed:
                    report.problem(f"{shard}: not listed in {MANIFEST}")
        for shard in shards:
            sha = listed.get(shard.name, {}).get("sha256")
            checks.append(ShardCheck(split, shard, root / INDEX_DIR / split / shard.name, sha, len(names) or 1, full))
    results: dict[Path, dict] = {}
    with Progress("verify shards", sum(c.shard.stat().st_size for c in checks), "B", scale=True) as bar:
        def finished(task: ShardCheck, result: dict) -> None:
            results[task.shard] = result
            report.problems.extend(result["problems"])
            bar.update(task.shard.stat().st_size)
        run_tasks(check_shard, checks, workers, finished)
    labels_by_split: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        ours = [c for c in checks if c.split == split]
        records = sum(results[c.shard]["records"] or 0 for c in ours)
        listed = expected_shards[split] or {}
        for check in ours:
            entry = listed.get(check.shard.name)
            found = results[check.shard]["records"]
            if entry is not None and found is not None and entry.get("records") != found:
                report.problem(f"{split}/{check.shard.name}: {found:,} records, "
                               f"{MANIFEST} says {entry.get('records')}")
        report.lines.append(f"{split}: {records:,} records in {len(ours):,} shards")
        expected = _expected(manifest, split)
        if full:
            labels: Counter = Counter()
            for check in ours:
                labels.update(results[check.shard]["labels"])
            counts = {names[i] if i < len(names) else str(i): n for i, n in sorted(labels.items())}
            _compare_counts(report, split, counts, expected)
            labels_by_split[split] = counts
        elif expected is not None:
            labels_by_split[split] = expected
    if len(labels_by_split) == 2:
        _compare_class_sets(report, SPLITS, (labels_by_split[SPLITS[0]], labels_by_split[SPLITS[1]]))
    report.lines.append(f"labels: {LABEL_OFFSET}..{len(names) + LABEL_OFFSET - 1} ({len(names):,} classes in "
                        f"{CLASSES_FILE}); checked {'every record' if full else 'the first record of every shard'}")
    report.lines.append(f"checked {len(checks):,} shards: index against tfrecord2idx"
                        f"{', sha256 against ' + MANIFEST if manifest is not None else ''}")
