"""python -m trainer.data.digits --out DIR --image-size 32: build the digits data set by hand."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DataError
from . import default_root, materialise_digits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.data.digits",
        description="Write scikit-learn's handwritten digits as ImageFolder and TFRecord data sets.",
        epilog="example: python -m trainer.data.digits --out /tmp/data --image-size 32",
    )
    parser.add_argument("--out", type=Path, default=None, help="root directory (default: $LARSCTL_DATA)")
    parser.add_argument("--image-size", type=int, default=32, help="side of the square images (default 32)")
    args = parser.parse_args(argv)
    try:
        paths = materialise_digits(args.out or default_root(), args.image_size)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"train-dir: {paths.train_dir}\nval-dir:   {paths.val_dir}\ndata-dir:  {paths.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
