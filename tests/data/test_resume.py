"""SIGKILL in the middle of convert and prepare (real subprocesses), then a rerun: the result is
byte-identical to an uninterrupted run, and nothing the killed run left looks finished."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from larsctl.data.sample import write_sample_archives
from tests.data.helpers import CLI, cli, tree

SHARDS = ["--train-shards", "16", "--val-shards", "3"]


def slow_imagefolder(root: Path) -> Path:
    """PNGs named .JPEG (each is decoded and re-encoded): slow enough to be killed mid-run."""
    rng = np.random.default_rng(1)
    for split, per_class in (("train", 80), ("val", 10)):
        for c in range(3):
            folder = root / split / f"n0000000{c}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"n0000000{c}_{k}.JPEG", format="PNG")
    return root


def start(*args) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(CLI + [str(a) for a in args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline, "nothing was written in time"
        time.sleep(0.005)
    proc.kill()  # SIGKILL to the command only: its workers must not outlive it
    proc.wait()


def test_convert_killed_mid_run_then_rerun_is_byte_identical(tmp_path):
    src = slow_imagefolder(tmp_path / "src")
    reference = tmp_path / "reference"  # in this process, one worker: shards do not depend on workers
    assert cli("convert", src, reference, *SHARDS, "--workers", "1").exit_code == 0

    out = tmp_path / "out"
    proc = start("convert", src, out, *SHARDS, "--workers", "2")
    shards = lambda: [p for p in (out / "train").glob("train-*")] if (out / "train").is_dir() else []  # noqa: E731
    kill_when(proc, lambda: len(shards()) >= 1)
    killed = sorted(p.name for p in shards())
    time.sleep(1.0)
    assert sorted(p.name for p in shards()) == killed  # no orphaned worker finished a shard afterwards
    assert 1 <= len(killed) < 16
    assert not (out / "manifest.json").exists()
    for name in killed:  # what exists is complete: recorded, indexed, its checksum right
        record = json.loads((out / ".larsctl" / "done" / "train" / f"{name}.json").read_text())
        assert (out / "idx_files" / "train" / name).is_file()
        assert (out / "train" / name).stat().st_size == record["bytes"]

    r = cli("convert", src, out, *SHARDS, "--workers", "2")
    assert r.exit_code == 0, r.output
    assert f"({19 - len(killed)} shards written, {len(killed)} already done)" in r.stdout
    assert tree(out) == tree(reference)  # shards, indexes, classes.txt and manifest.json
    assert not [p for p in out.rglob(".*.tmp")]


def test_prepare_killed_mid_run_then_rerun_gives_the_same_data_set(tmp_path):
    archives = tmp_path / "archives"
    truth = write_sample_archives(archives, classes=8, train_per_class=40, val_per_class=4, size=(96, 72))
    reference = tmp_path / "reference"
    assert cli("prepare", archives, reference, "--workers", "1").exit_code == 0

    out = tmp_path / "out"
    proc = start("prepare", archives, out, "--workers", "1")
    classes = lambda: [p for p in (out / "train").iterdir()] if (out / "train").is_dir() else []  # noqa: E731
    kill_when(proc, lambda: len(classes()) >= 2)
    done = classes()
    assert 2 <= len(done) < 8 and not (out / "manifest.json").exists() and not (out / "val").exists()
    for folder in done:  # a class folder in train/ is always complete
        expected = {n for n in truth.train[folder.name]
                    if f"ILSVRC2012_img_train.tar/{folder.name}.tar/{n}" not in truth.undecodable}
        assert {p.name for p in folder.iterdir()} == expected

    r = cli("prepare", archives, out, "--workers", "2")
    assert r.exit_code == 0, r.output
    assert f"{8 - len(done)} classes written, {len(done)} already done" in r.stdout
    assert tree(out) == tree(reference)
