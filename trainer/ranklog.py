"""Each rank's own log file: everything the process writes to stdout and stderr, copied.

Launchers differ in what per-rank output they keep (horovodrun --output-filename,
torchrun --log-dir with node-local rank numbers, srun --label, Hydra
-outfile-pattern...), and ranks on other nodes write wherever their node puts them.
The rank itself knows its global rank and writes ``<out_dir>/logs/ranks/rank.<R>.log``
on the job's shared filesystem, whatever started it.  The copy is taken at the file
descriptors, so native libraries' output (NCCL, Gloo, tracebacks) is in it too;
the launcher still gets every byte, unchanged.

A log that cannot be written (a full disk, a file size limit, a vanished or read-only
directory, EIO) is given up with one warning on the original stderr: the output goes on
to the console unchanged, and the rank never dies of its log.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path


class RankLog:
    """Copy fds 1 and 2 into ``path`` until :meth:`close` (or process exit)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._saved: list[tuple[int, int]] = []
        self._threads: list[threading.Thread] = []
        self._stderr = 2  # where the warning goes: the console's stderr, not the pipe
        self._fd: int | None = None  # None: no file (not opened, given up, or closed)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            self._drop_file(exc)
            return  # nothing to copy into: fds 1 and 2 stay as they are
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
        self._stderr = self._saved[1][1]

    def note(self, text: str) -> None:
        """A line for this file only (not the console): which rank ran where, and how it ended."""
        self._append(f"{text}\n".encode())

    def _pump(self, read_end: int, original: int) -> None:
        """Pass each chunk on at once; into the file only whole lines (up to the last newline or
        carriage return), so that a note cannot land inside a line that came in two writes
        (print() writes the text, then the newline)."""
        held = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                _write_all(original, chunk)
                held += chunk
                cut = max(held.rfind(b"\n"), held.rfind(b"\r")) + 1
                if cut:
                    self._append(held[:cut])
                    held = held[cut:]
        if held:
            self._append(held)

    def _append(self, data: bytes) -> None:
        """``data`` to the file; on its first error the file is given up."""
        with self._lock:
            if self._fd is None:
                return
            try:
                _write_all(self._fd, data)
            except OSError as exc:
                self._drop_file(exc)

    def _drop_file(self, error: OSError | None = None) -> None:
        """Close the file and write no more to it; with an error (or one from closing it: a
        network filesystem can report a lost write only then), say so once on the console's
        stderr.  Called with the lock held, or before the pumps start."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                error = error or exc
        if error is None:
            return
        warning = (f"trainer: rank log {self.path}: cannot write it ({error}); this rank's "
                   "output goes on to the console only\n")
        try:
            _write_all(self._stderr, warning.encode())
        except OSError:
            pass

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
        with self._lock:
            self._drop_file()
        for (_, original), thread in zip(self._saved, self._threads):
            if not thread.is_alive():
                os.close(original)
        self._saved.clear()
        self._threads.clear()
        self._stderr = 2


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
