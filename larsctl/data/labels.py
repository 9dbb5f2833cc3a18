"""The classes of the 50,000 validation images: which files `prepare` accepts, and why.

ILSVRC2012_img_val.tar holds ILSVRC2012_val_00000001.JPEG ... without labels. Accepted
(recognised by content, whatever their names):

- the official devkit, ``ILSVRC2012_devkit_t12.tar.gz`` as downloaded: its
  ``data/ILSVRC2012_validation_ground_truth.txt`` (line i: the ILSVRC2012_ID of image i)
  and ``data/meta.mat`` (ILSVRC2012_ID -> WNID), read from the archive without unpacking;
- those two files unpacked: the ground truth, with ``meta.mat`` beside it or given by
  ``--meta``;
- Kaggle's ``LOC_val_solution.csv`` (ImageId,PredictionString; the first word of the
  prediction string is the WNID);
- ``imagenet_2012_validation_synset_labels.txt`` (TensorFlow models' file that
  build_imagenet_data.py reads: line i is the WNID of image i).

Not accepted as the ID -> WNID mapping: ``LOC_synset_mapping.txt`` (and every other
1,000-line synset list in sorted WNID order). ILSVRC2012_IDs are not in sorted WNID order
(ID 1 is n02119789, kit fox; sorted index 0 is n01440764, tench), so pairing such a list
with the ground truth labels almost every validation image wrongly. meta.mat is the
devkit's own mapping; scipy.io.loadmat reads it (scipy comes with scikit-learn, which
larsctl already depends on; loadmat never unpickles).
"""
from __future__ import annotations

import csv
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from larsctl.errors import UserError

VAL_IMAGE = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
KAGGLE_ID = re.compile(r"^ILSVRC2012_val_(\d{8})$")
WNID = re.compile(r"^n\d{8}$")
KAGGLE_HEADER = ["ImageId", "PredictionString"]
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META = "meta.mat"
# Looked for in ARCHIVES_DIR, in this order, when --val-labels is not given.
CANDIDATES = ("ILSVRC2012_devkit_t12.tar.gz", GROUND_TRUTH, "ILSVRC2012_devkit_t12/data/" + GROUND_TRUTH,
              "LOC_val_solution.csv", "imagenet_2012_validation_synset_labels.txt")
EXPECTED = ("the devkit ILSVRC2012_devkit_t12.tar.gz, its ILSVRC2012_validation_ground_truth.txt with "
            "meta.mat, Kaggle's LOC_val_solution.csv or imagenet_2012_validation_synset_labels.txt")


@dataclass(frozen=True)
class ValLabels:
    source: Path
    kind: str                  # "devkit", "ground truth + meta.mat", "kaggle csv", "synset per line"
    wnids: dict[int, str]      # image number (1-based, as in the file name) -> WNID


def find_labels(archives_dir: Path) -> Path:
    for name in CANDIDATES:
        if (archives_dir / name).is_file():
            return archives_dir / name
    raise UserError(f"{archives_dir}: no validation labels found; expected {EXPECTED} "
                    "(or name one with --val-labels)")


def read_val_labels(path: Path, meta: Path | None, images: int) -> ValLabels:
    """The labels of `images` validation images (numbered 1..images) from `path`."""
    if not path.is_file():
        raise UserError(f"{path}: --val-labels: no such file; expected {EXPECTED}")
    if tarfile.is_tarfile(path):
        return _devkit(path, images)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file or tar archive; expected {EXPECTED}") from None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.replace(" ", "").startswith(",".join(KAGGLE_HEADER)):
        return ValLabels(path, "kaggle csv", _kaggle(path, text, images))
    if first.isdigit():
        if meta is None:
            meta = path.with_name(META)
            if not meta.is_file():
                raise UserError(f"{path}: holds ILSVRC2012_IDs; the devkit's {META} maps them to WNIDs and is "
                                f"not beside it: give it with --meta (or the whole ILSVRC2012_devkit_t12.tar.gz)")
        if not meta.is_file():
            raise UserError(f"{meta}: --meta: no such file; expected the devkit's data/{META}")
        mapping = read_meta_mat(meta.read_bytes(), meta)
        return ValLabels(path, "ground truth + meta.mat", _ground_truth(path, text, mapping, images))
    if WNID.match(first):
        return ValLabels(path, "synset per line", _synset_lines(path, text, images))
    raise UserError(f"{path}: line 1: {first[:40]!r} is neither an ILSVRC2012_ID, a WNID nor Kaggle's header; "
                    f"expected {EXPECTED}")


def _lines(path: Path, text: str, images: int, what: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != images:
        raise UserError(f"{path}: {len(lines):,} lines, expected {images:,} ({what} for each image of the "
                        "validation archive, in file-name order)")
    return lines


def _ground_truth(path: Path, text: str, mapping: dict[int, str], images: int) -> dict[int, str]:
    out = {}
    for n, line in enumerate(_lines(path, text, images, "one ILSVRC2012_ID"), 1):
        value = line.strip()
        if not value.isdigit() or int(value) not in mapping:
            raise UserError(f"{path}: line {n}: {value[:40]!r}: expected an ILSVRC2012_ID of a class "
                            f"(1..{len(mapping)}) in {META}")
        out[n] = mapping[int(value)]
    return out


def _synset_lines(path: Path, text: str, images: int) -> dict[int, str]:
    out = {}
    for n, line in enumerate(_lines(path, text, images, "one WNID"), 1):
        value = line.strip()
        if not WNID.match(value):
            hint = (" (a synset list such as LOC_synset_mapping.txt is not a label file)"
                    if WNID.match(value.split(" ")[0]) else "")
            raise UserError(f"{path}: line {n}: {value[:40]!r}: expected one WNID such as n01440764{hint}")
        out[n] = value
    return out


def _kaggle(path: Path, text: str, images: int) -> dict[int, str]:
    out: dict[int, str] = {}
    rows = csv.reader(io.StringIO(text))
    next(rows)  # header
    for n, row in enumerate(rows, 2):
        if not row:
            continue
        image = KAGGLE_ID.match(row[0].strip()) if row else None
        words = row[1].split() if len(row) > 1 else []
        if image is None or not words or not WNID.match(words[0]):
            raise UserError(f"{path}: line {n}: expected ILSVRC2012_val_NNNNNNNN,<WNID> <box>..., "
                            f"got {','.join(row)[:60]!r}")
        number = int(image.group(1))
        if number in out:
            raise UserError(f"{path}: line {n}: {row[0].strip()} is listed twice")
        out[number] = words[0]
    if len(out) != images:
        raise UserError(f"{path}: {len(out):,} images, expected {images:,} (one row for each image of the "
                        "validation archive)")
    return out


def _devkit(path: Path, images: int) -> ValLabels:
    """The ground truth and meta.mat, read from the devkit archive without unpacking it."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in (GROUND_TRUTH, META) and member.name.endswith("data/" + base):
                    found[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"{path}: corrupt or truncated archive ({exc}); expected the devkit "
                        "ILSVRC2012_devkit_t12.tar.gz") from None
    missing = [name for name in (GROUND_TRUTH, META) if name not in found]
    if missing:
        raise UserError(f"{path}: no data/{' or data/'.join(missing)} inside; expected the devkit "
                        "ILSVRC2012_devkit_t12.tar.gz")
    where = Path(f"{path}:data/{GROUND_TRUTH}")
    mapping = read_meta_mat(found[META], Path(f"{path}:data/{META}"))
    try:
        text = found[GROUND_TRUTH].decode()
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a text file; expected one ILSVRC2012_ID per line") from None
    return ValLabels(path, "devkit", _ground_truth(where, text, mapping, images))


def read_meta_mat(data: bytes, where: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the 1,000 leaf synsets (num_children == 0) in the devkit's meta.mat."""
    if WNID.match(data[:9].decode("ascii", "replace")):
        raise UserError(f"{where}: a synset list (such as LOC_synset_mapping.txt), not the devkit's meta.mat: "
                        "its lines are in sorted WNID order, not ILSVRC2012_ID order, and would mislabel the "
                        "validation images; give meta.mat, the devkit archive or LOC_val_solution.csv")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError(f"{where}: reading meta.mat needs scipy (pip install scipy); or give Kaggle's "
                        "LOC_val_solution.csv with --val-labels") from None
    try:
        synsets = loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        ids, wnids, children = synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"]
        mapping = {int(i): str(w) for i, w, c in zip(ids.ravel(), wnids.ravel(), children.ravel()) if int(c) == 0}
    except Exception as exc:  # noqa: BLE001 - any parse failure of an input file is the same bad input
        raise UserError(f"{where}: not the devkit's meta.mat (a MATLAB file with a synsets table of "
                        f"ILSVRC2012_ID, WNID, num_children): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                        ) from None
    bad = next((w for w in mapping.values() if not WNID.match(w)), None)
    if not mapping or bad is not None:
        raise UserError(f"{where}: synsets: expected WNIDs such as n01440764, got {bad!r}")
    return mapping
