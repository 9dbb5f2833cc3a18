"""Every path of one job, derived from its directory ``<workdir>/<job-id>/``.

Like submitit's ``JobPaths``, nothing else in larsctl spells a job file name:
the schedulers' scripts, status, logs and the registry all ask this object.
The directory alone is enough to rebuild a lost registry record (``job.json``).

Writes are atomic (temp file in the same directory, fsync, ``os.replace``) so a
crash or a full disk never leaves a half-written job.yaml or script behind.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from larsctl.errors import Failure

# errno values that mean "no room": ENOSPC (disk full), EDQUOT (quota),
# EFBIG (file size limit, e.g. RLIMIT_FSIZE).
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

# Rank prefixes the launchers put in front of each line of a combined log:
# mpirun --tag-output "[1,3]<stdout>:", horovodrun "[3]<stderr>:", torchrun --tee "[default3]:".
RANK_PREFIX = re.compile(r"^\[(?:\d+,)?(?:default)?(?P<rank>\d+)\](?:<std(?:out|err)>)?:")


@dataclass(frozen=True)
class JobPaths:
    """The files of the job living in ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def job_id(self) -> str:
        return self.root.name

    @property
    def job_yaml(self) -> Path:
        """The resolved spec; the trainer reads it with ``--config``."""
        return self.root / "job.yaml"

    @property
    def record(self) -> Path:
        """A copy of the registry record, to rebuild a lost database entry."""
        return self.root / "job.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def rank_logs(self) -> Path:
        """Per-rank output of the launcher (``--output-filename`` / ``--log-dir``)."""
        return self.logs / "ranks"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def restarts(self) -> Path:
        """One line per requeue, appended by the batch scripts (schedulers/batch.py)."""
        return self.root / "restarts"

    @property
    def state(self) -> Path:
        """Local jobs only: per-segment status files written by the script."""
        return self.root / "state"

    def script(self, scheduler: str, segment: int = 0) -> Path:
        """The batch script of one chain segment (``job.<scheduler>.sh``, then ``-1``, ``-2``...)."""
        suffix = "" if segment == 0 else f"-{segment}"
        return self.root / f"job.{scheduler}{suffix}.sh"

    def segment_log(self, segment: int = 0) -> Path:
        """Combined stdout+stderr of one segment's batch script."""
        return self.logs / f"segment-{segment}.out"

    def segment_status(self, segment: int) -> Path:
        return self.state / f"segment-{segment}.status"

    def segment_pid(self, segment: int) -> Path:
        return self.state / f"segment-{segment}.pid"

    def cancel_marker(self, segment: int) -> Path:
        return self.state / f"segment-{segment}.cancel"

    def read_restarts(self) -> int:
        """How many times the job was requeued (all segments)."""
        try:
            return sum(1 for line in self.restarts.read_text().splitlines() if line.strip())
        except FileNotFoundError:
            return 0

    def exists(self) -> bool:
        return self.job_yaml.is_file()


def _no_space(exc: OSError, path: Path) -> Failure:
    return Failure(f"no space left while writing {path}: {os.strerror(exc.errno)}")


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, rename.

    A full disk raises :class:`Failure` with one line and leaves ``path``
    untouched (old content or absent) and no temp file behind.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            raise _no_space(exc, path) from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    with open(path) as fh:
        return json.load(fh)


def create(paths: JobPaths, files: dict[str, str | bytes], executable: tuple[str, ...] = ()) -> None:
    """Create the job directory with its sub-directories and ``files`` (name -> content).

    All or nothing: if anything fails (a full disk, a permission error) the
    directory is removed again, so no half-made job is left to confuse status.
    The directory must not exist yet (job ids are unique, so it never does
    unless two hosts share a workdir; then the caller picks a new id).
    """
    paths.root.parent.mkdir(parents=True, exist_ok=True)
    paths.root.mkdir()  # FileExistsError reaches the caller on purpose
    try:
        for sub in (paths.logs, paths.rank_logs, paths.checkpoints, paths.tensorboard, paths.state):
            sub.mkdir()
        for name, content in files.items():
            atomic_write(paths.root / name, content, 0o755 if name in executable else 0o644)
    except BaseException as exc:
        shutil.rmtree(paths.root, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            raise _no_space(exc, paths.root) from None
        raise
