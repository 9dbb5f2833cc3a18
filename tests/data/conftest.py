"""Small archives in the official ILSVRC2012 structure, prepared and converted once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `from tests.data.helpers import ...` under --import-mode=importlib
    sys.path.insert(0, str(REPO))

from larsctl.data.sample import write_sample_archives  # noqa: E402
from tests.data.helpers import (CLASSES, TRAIN_PER_CLASS, TRAIN_SHARDS, VAL_PER_CLASS, VAL_SHARDS,  # noqa: E402
                                cli)


@pytest.fixture(scope="session")
def archives(tmp_path_factory):
    """(directory, truth): every kind of label file, the awkward images included."""
    root = tmp_path_factory.mktemp("archives")
    truth = write_sample_archives(root, classes=CLASSES, train_per_class=TRAIN_PER_CLASS,
                                  val_per_class=VAL_PER_CLASS, labels=("devkit", "kaggle", "tf"))
    return root, truth


@pytest.fixture(scope="session")
def prepared(archives, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "imagenet"
    r = cli("prepare", archives[0], out, "--workers", "2")
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session")
def converted(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "tfrecord"
    r = cli("convert", prepared, out, "--train-shards", TRAIN_SHARDS, "--val-shards", VAL_SHARDS, "--workers", "2")
    assert r.exit_code == 0, r.output
    return out
