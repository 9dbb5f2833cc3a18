"""Each rank's own log file: everything the process writes to stdout and stderr, copied.

Launchers differ in what per-rank output they keep (horovodrun --output-filename,
torchrun --log-dir with node-local rank numbers, srun --label, Hydra
-outfile-pattern...), and ranks on other nodes write wherever their node puts them.
The rank itself knows its global rank and writes ``<out_dir>/logs/ranks/rank.<R>.log``
on the job's shared filesystem, whatever started it.  The copy is taken at the file
descriptors, so native libraries' output (NCCL, Gloo, tracebacks) is in it too;
the launcher still gets every byte, unchanged.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path


class RankLog:
    """Copy fds 1 and 2 into ``path`` until :meth:`close` (or process exit)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab", buffering=0)
        self._lock = threading.Lock()
        self._saved: list[tuple[int, int]] = []
        self._threads: list[threading.Thread] = []
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            stream.flush()
            original = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self._saved.append((fd, original))
            thread = threading.Thread(target=self._pump, args=(read_end, original), daemon=True,
                                      name=f"rank-log-{fd}")
            thread.start()
            self._threads.append(thread)

    def note(self, text: str) -> None:
        """A line for this file only (not the console): which rank ran where, and how it ended."""
        with self._lock:
            self._file.write(f"{text}\n".encode())

    def _pump(self, read_end: int, original: int) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                os.write(original, chunk)
                with self._lock:
                    self._file.write(chunk)

    def close(self) -> None:
        """Put the original fds back (ending the pipes), drain them, close the file.

        An original fd is closed only once its pump has written the pipe's last bytes to it;
        one whose pump is still running after 10 s (a child process holding the pipe open)
        stays open for it."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, original in self._saved:
            os.dup2(original, fd)  # the pipe's last write end closes: the pump reads to EOF
        for thread in self._threads:
            thread.join(timeout=10)
        for (_, original), thread in zip(self._saved, self._threads):
            if not thread.is_alive():
                os.close(original)
        self._saved.clear()
        self._threads.clear()
        self._file.close()
