"""Writes that a crash or a full disk never leaves half done: temp file, fsync, rename.

Shared by the trainer (checkpoints and their sidecars) and larsctl (job files,
scripts, reports); the trainer runtime imports nothing from larsctl, so it lives here.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

# errno values that mean "no room": ENOSPC (disk full), EDQUOT (quota), EFBIG (file size limit).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Temporary files of writes in progress (or interrupted by a crash): ".<name>.<random>.tmp".
TEMP_GLOB = ".*.tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (its entry on disk)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only when the block ends without error.

    On any error (a full disk included) ``path`` keeps its old content or stays
    absent, no temp file is left behind, and the exception propagates.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
