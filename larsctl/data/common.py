"""What prepare, convert and verify share: the layouts, the output directory's claim and
lock, the manifest, durable writes, worker processes and progress.

An output directory holds, besides the data set, ``.larsctl/``: ``claim.json`` (which
command and inputs started it: a rerun with other inputs is refused instead of mixing
two data sets), ``lock`` (one writer at a time) and per-unit records of finished work
(``done/``). ``manifest.json`` at the top is written last, atomically: a directory
without it never looks finished.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import click

from larsctl.errors import Failure, UserError
from larsctl.facts.jobdir import atomic_write, no_space
from trainer.data.tfrecord import INDEX_DIR, SHARD_NAME, SPLITS
from trainer.fsio import NO_SPACE

# ImageFolder split directories (what the recipes' train_dir / val_dir point at) and the
# TFRecord split each one becomes.
IMAGEFOLDER_SPLITS = ("train", "val")
TFRECORD_SPLIT = dict(zip(IMAGEFOLDER_SPLITS, SPLITS))
MANIFEST = "manifest.json"
STATE_DIR = ".larsctl"
MANIFEST_FORMAT = 1


def usable_cpus() -> int:
    """CPUs this process may run on (a Slurm or cgroup cpuset, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --- errors ------------------------------------------------------------------------------

def world_error(exc: BaseException, where: Path | str | None = None) -> click.ClickException:
    """One line for an OSError (disk full, permission) or a worker that died; exit 1."""
    if isinstance(exc, click.ClickException):
        return exc
    if isinstance(exc, BrokenProcessPool):
        return Failure(f"a worker process died ({exc}); was it killed for memory? rerun to continue")
    if isinstance(exc, OSError):
        path = exc.filename or where
        if exc.errno in NO_SPACE:
            return no_space(exc, path)
        return Failure(f"{path}: {exc.strerror or exc}")
    return Failure(str(exc))


# --- durable files -----------------------------------------------------------------------

def fsync_files(paths: Iterable[Path]) -> None:
    """fsync files written earlier (after all were written, so the writeback overlaps)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, obj) -> None:
    """Atomic, durable, deterministic JSON (sorted keys); a full disk is one Failure line."""
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: Path, what: str) -> dict:
    """A JSON object written by us; anything else is bad input naming the file (exit 2)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected {what}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; expected {what}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {what} (a JSON object), got {type(data).__name__}")
    return data


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- the output directory ----------------------------------------------------------------

def describe_claim(claim: dict) -> str:
    layout = {"prepare": "an ImageFolder data set", "convert": "a TFRecord data set"}
    return f"{layout.get(claim.get('command'), 'a data set')} written by `larsctl data {claim.get('command')}`"


@dataclass(frozen=True)
class OutputDir:
    """The OUT of prepare or convert."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def claim_file(self) -> Path:
        return self.state / "claim.json"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def done(self, *parts: str) -> Path:
        """Where the record of one finished unit (a class, a shard) lives."""
        return self.state.joinpath("done", *parts)

    def check(self, command: str) -> dict | None:
        """Refuse (exit 2) a directory that holds anything but what `command` started; its claim."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise UserError(f"{root}: exists and is not a directory; expected a new or empty output directory")
        old = read_json(self.claim_file, "larsctl's claim record") if self.claim_file.is_file() else None
        if old is None and root.is_dir():
            foreign = sorted(p.name for p in root.iterdir() if p.name != STATE_DIR)
            if foreign:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise UserError(f"{root}: holds files that `larsctl data {command}` did not write "
                                f"({shown}); expected a new or empty directory")
        if old is not None and old.get("command") != command:
            raise UserError(f"{root}: holds {describe_claim(old)}; expected a new or empty directory "
                            f"for `larsctl data {command}`")
        return old

    @contextlib.contextmanager
    def claimed(self, claim: dict) -> Iterator[bool]:
        """Create or reopen OUT for `claim`, holding its lock; yields True when resuming.

        Refuses (exit 2, nothing written) a directory that holds anything else: files we did
        not write, or a data set another command or other inputs started.
        """
        root = self.root
        claim = json.loads(json.dumps(claim))  # as it reads back from claim.json
        old = self.check(claim["command"])
        if old is not None and old != claim:
            key = next(k for k in sorted(set(old) | set(claim)) if old.get(k) != claim.get(k))
            raise UserError(f"{root}: was started by `larsctl data {claim['command']}` with {key} "
                            f"{old.get(key)!r}, now {claim.get(key)!r}; use a new directory, or the same "
                            "inputs and options to continue it")
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.state / "lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{root}: another `larsctl data` command is writing here; "
                                "wait for it to end") from None
            except OSError:
                pass  # no flock on this file system: the claim still guards the inputs
            if old is None:
                write_json(self.claim_file, claim)
            yield old is not None


# --- layouts -----------------------------------------------------------------------------

EXPECTED_DATA_SET = ("expected a data set directory: TFRecord shards from `larsctl data convert` (train/, "
                     "validation/, idx_files/) or ImageFolder class folders from `larsctl data prepare` (train/, val/)")


def found_at(path: Path) -> str:
    """What is at a path that should be a directory, in a few words."""
    if path.is_symlink() and not path.exists():
        return f"a broken symbolic link (to {os.readlink(path)})"
    if not path.exists():
        return "nothing at this path"
    if path.is_file():
        return "a TFRecord shard, not a directory" if SHARD_NAME.match(path.name) else "a file, not a directory"
    return "not a directory"


def detect_layout(root: Path) -> str:
    """"imagefolder" or "tfrecord" for a data set directory (its manifest's word, if any)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: {found_at(root)}; {EXPECTED_DATA_SET}")
    manifest = root / MANIFEST
    if manifest.is_file():
        layout = read_json(manifest, "a larsctl data manifest").get("layout")
        if layout in ("imagefolder", "tfrecord"):
            return layout
        raise UserError(f"{manifest}: layout: expected 'imagefolder' or 'tfrecord', got {layout!r}")
    if (root / SPLITS[1]).is_dir() or (root / INDEX_DIR).is_dir():
        return "tfrecord"
    if all((root / split).is_dir() for split in IMAGEFOLDER_SPLITS):
        return "imagefolder"
    raise UserError(f"{root}: neither layout: expected train/ and val/ class folders (ImageFolder) or "
                    "train/, validation/ and idx_files/ (TFRecord)")


# --- progress ----------------------------------------------------------------------------

class Progress:
    """A tqdm bar on a terminal; in batch logs a plain line each time a piece of work takes
    the total past a tenth: "convert: 40% (8 of 20 img, 3.1 img/s, ETA 0:04)" (stderr either way)."""

    def __init__(self, desc: str, total: float, unit: str = "it", initial: float = 0, scale: bool = False):
        self.desc, self.total, self.unit, self.n, self.initial, self.scale = desc, total, unit, initial, initial, scale
        self.bar = None
        self.next_line = 0.1
        self.start = time.monotonic()
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=scale,
                            unit_divisor=1024 if scale else 1000, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: float) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if self.total and self.n / self.total >= self.next_line - 1e-9:  # one line per 10% crossed
            click.echo(self.line(), err=True)
            self.next_line = (int(self.n / self.total * 10 + 1e-9) + 1) / 10

    def line(self) -> str:
        """Done so far, the rate of this run's work (not what an earlier run did) and the time left."""
        elapsed = time.monotonic() - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.n >= self.total:
            left = f"in {_interval(elapsed)}"
        else:
            left = f"ETA {_interval((self.total - self.n) / rate) if rate > 0 else '?'}"
        done = self._amount(self.n) if self.scale else f"{self.n:,.0f}"
        speed = self._amount(rate) if self.scale else f"{rate:,.1f} {self.unit}"
        return f"{self.desc}: {self.n / self.total:.0%} ({done} of {self._amount(self.total)}, {speed}/s, {left})"

    def _amount(self, x: float) -> str:
        """1,234 img; with scale 1.2 GiB (binary prefixes)."""
        if not self.scale:
            return f"{x:,.0f} {self.unit}"
        for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
            if x < 1024 or prefix == "Ti":
                break
            x /= 1024
        return f"{x:,.1f} {prefix}{self.unit}"

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _interval(seconds: float) -> str:
    """0:04, 12:30, 3:02:10."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --- worker processes --------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a SIGKILLed command takes its workers with it (Linux), so no
    orphan finishes a shard behind the back of the rerun."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def run_tasks(fn: Callable, tasks: list, workers: int, on_result: Callable) -> None:
    """Run fn(task) for every task, in `workers` processes (in this one when workers is 1),
    calling on_result(task, result) in this process as each one ends (so progress moves
    piece by piece). The first exception stops the rest at once: what has not started is
    cancelled, the workers are terminated and reaped, then it is raised here. What a
    terminated worker was writing is the caller's to remove (as after a SIGKILL)."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_result(task, fn(task))
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context,
                               initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        pending = {pool.submit(fn, task): task for task in tasks}
        for future in as_completed(pending):
            on_result(pending[future], future.result())
    except BaseException:
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's pending work and end its workers now (ProcessPoolExecutor's
    terminate_workers() of Python 3.14, which 3.11 lacks), waiting until each has ended."""
    processes = list((pool._processes or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():  # SIGTERM blocked or ignored
            process.kill()
            process.join()
