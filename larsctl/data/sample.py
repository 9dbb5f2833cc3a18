"""Small archives in the exact structure of the official ILSVRC2012 downloads, for trying
`larsctl data` without ImageNet (and for its tests and benchmark):

    OUT/ILSVRC2012_img_train.tar       per-class tars n01440764.tar, ... of nNNNNNNN_K.JPEG
    OUT/ILSVRC2012_img_val.tar         ILSVRC2012_val_00000001.JPEG, ...
    OUT/ILSVRC2012_devkit_t12.tar.gz   data/ILSVRC2012_validation_ground_truth.txt, data/meta.mat
    (--labels kaggle) OUT/LOC_val_solution.csv   (--labels tf) imagenet_2012_validation_synset_labels.txt

Generated images (a colour per class plus noise), including ImageNet's awkward files
unless --no-awkward: a CMYK JPEG, a PNG named .JPEG and a grayscale JPEG in the first
class, a truncated JPEG in the second, a grayscale and a CMYK JPEG among the validation
images. As in the devkit, ILSVRC2012_IDs are not in sorted WNID order.

    python -m larsctl.data.sample archives --classes 4 --train-per-class 10 --val-per-class 3
"""
from __future__ import annotations

import argparse
import io
import random
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# The first sorted ImageNet WNIDs, then made-up ones of the same form.
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041",
         "n01514668", "n01514859", "n01518878")
LABEL_FORMATS = ("devkit", "kaggle", "tf")


@dataclass
class Truth:
    """What the archives hold, for checking what `prepare` made of them."""
    classes: list[str]
    train: dict[str, list[str]]                  # wnid -> image names in its tar
    val: dict[int, str]                          # image number -> wnid
    undecodable: list[str] = field(default_factory=list)   # paths inside the archives
    awkward: dict[str, str] = field(default_factory=dict)  # kind -> path inside the archives


def wnids(count: int) -> list[str]:
    return list(WNIDS[:count]) + [f"n{90000000 + i:08d}" for i in range(len(WNIDS), count)]


def _photo(rng: np.random.Generator, colour: np.ndarray, size: tuple[int, int]) -> Image.Image:
    width, height = size
    coarse = rng.normal(0, 40, (max(2, height // 16), max(2, width // 16), 3))
    smooth = np.asarray(Image.fromarray(np.clip(128 + coarse, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.BICUBIC), dtype=np.float32) - 128
    fine = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(colour + smooth + fine, 0, 255).astype(np.uint8), "RGB")


def _encode(img: Image.Image, kind: str = "rgb") -> bytes:
    out = io.BytesIO()
    if kind == "png":
        img.save(out, format="PNG")
    elif kind == "cmyk":
        img.convert("CMYK").save(out, format="JPEG", quality=90)
    elif kind == "gray":
        img.convert("L").save(out, format="JPEG", quality=90)
    else:
        img.save(out, format="JPEG", quality=90)
    data = out.getvalue()
    return data[:len(data) // 2] if kind == "truncated" else data


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_340_000_000, 0o644
    tar.addfile(info, io.BytesIO(data))


def _meta_mat(classes: list[str], ids: dict[str, int]) -> bytes:
    """meta.mat as the devkit has it: a synsets struct array, leaves (num_children 0) first."""
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(ids[w], w, f"class {w}", f"the synset {w}", 0, np.zeros(0, np.uint16), 0, 1300) for w in classes]
    rows.sort()
    parent = len(classes) + 1  # a non-leaf synset, as in the real file (IDs 1001..1860)
    rows.append((parent, "n00001740", "entity", "the root", len(classes),
                 np.arange(1, len(classes) + 1, dtype=np.uint16), 10, 0))
    table = np.zeros(len(rows), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        table[i] = row
    out = io.BytesIO()
    savemat(out, {"synsets": table})
    return out.getvalue()


def write_sample_archives(out: Path, *, classes: int = 4, train_per_class: int = 10, val_per_class: int = 3,
                          size: tuple[int, int] = (64, 48), labels: tuple[str, ...] = ("devkit",),
                          awkward: bool = True, seed: int = 0) -> Truth:
    if awkward and (classes < 2 or train_per_class < 4 or classes * val_per_class < 2):
        raise ValueError("awkward files need at least 2 classes, 4 train images per class and 2 val images")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng, shuffle = np.random.default_rng(seed), random.Random(seed)
    names = wnids(classes)
    colours = {w: rng.uniform(40, 215, 3) for w in names}
    truth = Truth(names, {}, {})
    special = {(0, 0): "cmyk", (0, 1): "png", (0, 2): "gray", (1, 0): "truncated"} if awkward else {}
    with tarfile.open(out / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as train:
        for c, wnid in enumerate(names):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w", format=tarfile.GNU_FORMAT) as class_tar:
                for k in range(train_per_class):
                    name = f"{wnid}_{k}.JPEG"
                    kind = special.get((c, k), "rgb")
                    _add(class_tar, name, _encode(_photo(rng, colours[wnid], size), kind))
                    truth.train.setdefault(wnid, []).append(name)
                    if kind != "rgb":
                        truth.awkward[kind] = f"ILSVRC2012_img_train.tar/{wnid}.tar/{name}"
                    if kind == "truncated":
                        truth.undecodable.append(truth.awkward[kind])
            _add(train, f"{wnid}.tar", inner.getvalue())
    order = [w for w in names for _ in range(val_per_class)]
    shuffle.shuffle(order)
    val_special = {1: "gray", 2: "cmyk"} if awkward else {}
    with tarfile.open(out / "ILSVRC2012_img_val.tar", "w", format=tarfile.GNU_FORMAT) as val:
        for n, wnid in enumerate(order, 1):
            kind = val_special.get(n, "rgb")
            _add(val, f"ILSVRC2012_val_{n:08d}.JPEG", _encode(_photo(rng, colours[wnid], size), kind))
            truth.val[n] = wnid
            if kind != "rgb":
                truth.awkward[f"val {kind}"] = f"ILSVRC2012_img_val.tar/ILSVRC2012_val_{n:08d}.JPEG"
    if "devkit" in labels:
        ids = {w: i for i, w in enumerate(reversed(names), 1)}  # not sorted order, like the devkit's
        ground_truth = "".join(f"{ids[truth.val[n]]}\n" for n in sorted(truth.val)).encode()
        with tarfile.open(out / "ILSVRC2012_devkit_t12.tar.gz", "w:gz", format=tarfile.GNU_FORMAT) as devkit:
            _add(devkit, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", ground_truth)
            _add(devkit, "ILSVRC2012_devkit_t12/data/meta.mat", _meta_mat(names, ids))
            _add(devkit, "ILSVRC2012_devkit_t12/readme.txt", b"ILSVRC2012 development kit (sample)\n")
    if "kaggle" in labels:
        rows = [f"ILSVRC2012_val_{n:08d},{w} 1 2 30 40 {w} 5 6 20 21 \n" for n, w in truth.val.items()]
        shuffle.shuffle(rows)
        (out / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(rows))
    if "tf" in labels:
        (out / "imagenet_2012_validation_synset_labels.txt").write_text(
            "".join(f"{truth.val[n]}\n" for n in sorted(truth.val)))
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larsctl.data.sample", description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m larsctl.data.sample archives --classes 4")
    parser.add_argument("out", type=Path, help="directory for the archives")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--val-per-class", type=int, default=3)
    parser.add_argument("--size", default="64x48", help="WIDTHxHEIGHT of the images (default 64x48)")
    parser.add_argument("--labels", default="devkit",
                        help=f"comma-separated validation label files to write: {', '.join(LABEL_FORMATS)}, all")
    parser.add_argument("--no-awkward", action="store_true", help="only plain RGB JPEGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        kinds = LABEL_FORMATS if args.labels == "all" else tuple(args.labels.split(","))
        if set(kinds) - set(LABEL_FORMATS) or min(args.classes, args.train_per_class, args.val_per_class,
                                                    width, height) < 1:
            raise ValueError
    except ValueError:
        print(f"error: expected positive counts, --size WxH and --labels from {', '.join(LABEL_FORMATS)}",
              file=sys.stderr)
        return 2
    try:
        truth = write_sample_archives(args.out, classes=args.classes, train_per_class=args.train_per_class,
                                      val_per_class=args.val_per_class, size=(width, height), labels=kinds,
                                      awkward=not args.no_awkward, seed=args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(truth.classes)} classes, {sum(map(len, truth.train.values()))} train and "
          f"{len(truth.val)} val images ({', '.join(sorted(truth.awkward)) or 'no awkward files'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
