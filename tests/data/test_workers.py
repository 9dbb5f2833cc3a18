"""Parallel work with real worker processes (larsctl/data/common.py run_tasks): each piece's
result reaches the command, and its progress line, as the piece ends (not all at the end),
and the first error stops every worker at once, leaving no process behind."""
from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import time
import timeit
import uuid
from pathlib import Path

import pytest
from PIL import Image

from larsctl.data.common import run_tasks
from larsctl.data.images import decode_problem
from larsctl.data.sample import write_sample_archives
from larsctl.errors import UserError
from tests.data.helpers import CLI, one_line, run_cli
from tests.data.worker_tasks import Piece, work


def test_each_result_reaches_the_caller_while_other_pieces_still_run(tmp_path):
    """The quick piece's result opens the gate the other piece waits for (30 s at most):
    only a caller told of each piece as it ends sees the other one released."""
    gate = tmp_path / "gate"
    pieces = [Piece("quick", tmp_path), Piece("waits", tmp_path, seconds=30, gate=gate)]
    seen = []

    def on_result(piece: Piece, result: str) -> None:
        seen.append((piece.name, result))
        gate.touch()
    run_tasks(work, pieces, 2, on_result)
    assert seen == [("quick", "slept"), ("waits", "released")]


def test_the_first_error_stops_every_worker_at_once(tmp_path):
    pieces = [Piece("a", tmp_path, seconds=20), Piece("bad", tmp_path, seconds=10, fails=True),
              Piece("c", tmp_path, seconds=20), Piece("d", tmp_path, seconds=20)]
    start = time.monotonic()
    with pytest.raises(UserError, match="bad: expected a good piece"):
        run_tasks(work, pieces, 2, lambda piece, result: None)
    assert time.monotonic() - start < 10  # not the 20 s the running piece would take
    assert not list(tmp_path.glob("*.finished"))
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(pids) >= 2
    for pid in pids:  # ended and reaped: no worker left running, no zombie
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --- the commands ----------------------------------------------------------------------------

def plain_png(side: int = 3000) -> bytes:
    """A one-colour PNG: 33 KB on disk, but ~0.1 s to decode and re-encode (a long piece)."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (120, 30, 200)).save(out, format="PNG")
    return out.getvalue()


def tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(out, format="JPEG")
    return out.getvalue()


def imagefolder_with_a_slow_val(root: Path) -> Path:
    """train: 40 tiny RGB JPEGs (4 quick shards); val: 20 large PNGs named .JPEG (one slow shard)."""
    for split, data, per_class in (("train", tiny_jpeg(), 20), ("val", plain_png(), 10)):
        for c in ("n00000000", "n00000001"):
            (root / split / c).mkdir(parents=True)
            for k in range(per_class):
                (root / split / c / f"{c}_{k}.JPEG").write_bytes(data)
    return root


PROGRESS = re.compile(r"^convert: (\d+)% \((\d+) of 60 img, ([\d.,]+) img/s, (ETA|in) (\d+:\d\d)\)$")


def test_convert_reports_progress_as_each_shard_ends(tmp_path):
    """The slow validation shard (the biggest, so it starts first) is still being written when
    the quick train shards' progress lines arrive: lines in order, each with rate and ETA."""
    src, out = imagefolder_with_a_slow_val(tmp_path / "src"), tmp_path / "out"
    val_shard = out / "validation" / "validation-00000-of-00001"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["convert", src, out, "--train-shards", "4", "--val-shards", "1", "--workers", "2"]
    proc = subprocess.Popen(CLI + [str(a) for a in args], env=env, text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    lines = [(line.rstrip("\n"), val_shard.exists()) for line in proc.stderr]
    assert proc.wait(timeout=300) == 0, lines
    matches = [(PROGRESS.match(line), shard_there) for line, shard_there in lines]
    assert all(m for m, _ in matches), lines
    percents = [int(m.group(1)) for m, _ in matches]
    assert percents == sorted(set(percents)) and percents[-1] == 100 and len(percents) >= 4, lines
    assert [m.group(2) for m, _ in matches[:4]] == ["10", "20", "30", "40"]  # the quick shards, one by one
    assert not any(shard_there for _, shard_there in matches[:4])  # while the slow one was still running
    assert all(float(m.group(3)) > 0 for m, _ in matches)
    assert [m.group(4) for m, _ in matches] == ["ETA"] * (len(matches) - 1) + ["in"]


def train_tar_with_a_slow_class_and_a_bad_one(path: Path, slow: str, bad: str, images: int) -> None:
    """The slow class first (large images, ~0.1 s each to decode), then a class whose tar holds
    a file in a sub-folder (bad input: prepare expects plain file names)."""
    def class_tar(members: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()
    png = plain_png()
    classes = {slow: class_tar({f"{slow}_{k}.JPEG": png for k in range(images)}),
               bad: class_tar({f"{bad}_0.JPEG": tiny_jpeg(), f"sub/{bad}_1.JPEG": tiny_jpeg()})}
    with tarfile.open(path, "w") as tar:
        for wnid, data in classes.items():
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds marker (a command's workers inherit it)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # ended meanwhile, or not ours to read
            pass
    return found


def test_prepare_stops_at_the_first_bad_class_without_finishing_the_others(tmp_path):
    archives = tmp_path / "archives"
    truth = write_sample_archives(archives, classes=2, train_per_class=1, val_per_class=1, awkward=False)
    slow, bad = truth.classes
    images = 100
    train_tar_with_a_slow_class_and_a_bad_one(archives / "ILSVRC2012_img_train.tar", slow, bad, images)
    png = plain_png()
    # what finishing the slow class would take at the least
    slow_class_seconds = images * min(timeit.repeat(lambda: decode_problem(png), number=1, repeat=3))
    out, marker = tmp_path / "out", str(uuid.uuid4())
    start = time.perf_counter()
    r = run_cli("prepare", archives, out, "--workers", "2", env={"LARSCTL_TEST_RUN": marker})
    took = time.perf_counter() - start
    assert r.returncode == 2, r.stderr
    assert one_line(r) == (f"Error: {archives}/ILSVRC2012_img_train.tar: ILSVRC2012_img_train.tar/{bad}.tar/"
                           f"sub/{bad}_1.JPEG: expected a plain file name such as {bad}_10026.JPEG")
    assert took < slow_class_seconds, (took, slow_class_seconds)
    assert not (out / "train" / slow).exists() and not (out / ".larsctl" / "done" / "train" / f"{slow}.json").exists()
    assert not list((out / ".larsctl" / "partial" / "train").glob("*"))  # the stopped class's files removed
    assert processes_with(marker) == []


def test_convert_stopped_by_a_bad_file_leaves_no_temporary_shard(tmp_path):
    """A dangling link among the train images fails a quick shard while the slow validation
    shard is being written: that worker is stopped and its hidden temporary file removed."""
    src, out = imagefolder_with_a_slow_val(tmp_path / "src"), tmp_path / "out"
    link = src / "train" / "n00000000" / "n00000000_moved.JPEG"
    link.symlink_to(tmp_path / "elsewhere.JPEG")
    r = run_cli("convert", src, out, "--train-shards", "4", "--val-shards", "1", "--workers", "2")
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"Error: {link}: No such file or directory"  # after progress lines
    assert not (out / "validation" / "validation-00000-of-00001").exists()  # stopped, not finished
    assert not list(out.rglob(".*.tmp"))
