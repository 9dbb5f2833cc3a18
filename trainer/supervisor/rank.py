"""A rank's part in its job's supervision: the heartbeat, and one record of how it ended.

Inside a larsctl job (the batch script made ``<out_dir>/attempts/current``), the rank
starts its heartbeat process before anything slow and writes ``rank.<R>.json`` when it
ends, in its own words: completed, preempted, cancelled, diverged, bad_input, oom or
crash (with the error, and whether the error only says that a peer went away).  Outside
a job (``python -m trainer`` by hand) both are off and every call does nothing.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from pathlib import Path

from trainer.supervisor.causes import Cause, FaultSettings
from trainer.supervisor.classify import error_signature, is_peer_failure
from trainer.supervisor.heartbeat import Heartbeat, period_for
from trainer.supervisor.records import current_attempt, write_json


def early_rank(env=os.environ) -> int:
    """This process's rank before the engine starts (horovodrun's, or any launcher's variables)."""
    if "HOROVOD_RANK" in env:
        return int(env["HOROVOD_RANK"])
    from trainer.environment import detect

    return detect(env).rank


def exception_cause(exc: BaseException) -> Cause:
    """oom for the device's or the host's out-of-memory errors, crash for the rest."""
    if isinstance(exc, MemoryError) or type(exc).__name__ in ("OutOfMemoryError", "OutOfMemory"):
        return Cause.OOM
    text = str(exc)
    if "out of memory" in text.lower() and "cuda" in text.lower():
        return Cause.OOM
    return Cause.CRASH


class RankSupervision:
    """``progress(phase, step)`` on the training path (one memory write), ``end(...)`` once."""

    def __init__(self, out_dir: Path | str, rank: int, settings: FaultSettings):
        self.rank = rank
        self.step = 0
        self.attempt = current_attempt(out_dir)
        self.heartbeat: Heartbeat | None = None
        self._ended = False
        if self.attempt is None or not self.attempt.dir.is_dir():
            self.attempt = None
            return
        try:
            self.heartbeat = Heartbeat(self.attempt.heartbeat(rank), rank, period_s=period_for(settings.bound_s),
                                       deadman_s=2 * settings.bound_s, startup_deadman_s=2 * settings.startup_s)
        except OSError as exc:  # no /dev/shm, no room: supervision degrades to the end record
            print(f"trainer: rank {rank}: no heartbeat ({exc}); the watchdog cannot see this rank",
                  file=sys.stderr, flush=True)

    @property
    def active(self) -> bool:
        return self.attempt is not None

    def progress(self, phase: str, step: int | None = None) -> None:
        if step is not None:
            self.step = step
        if self.heartbeat is not None:
            self.heartbeat.set(phase, self.step)

    def end(self, cause: Cause, detail: str, step: int | None = None, error: str | None = None,
            victim: bool = False) -> None:
        """Record how this rank ended (the first call wins: the innermost handler knows best)."""
        if self._ended:
            return
        self._ended = True
        if step is not None:
            self.step = step
        if self.heartbeat is not None:
            self.heartbeat.close(self.step)
        if self.attempt is None:
            return
        record = {"rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(), "cause": cause.value,
                  "step": self.step, "detail": detail, "error": error, "victim": victim, "time": time.time()}
        try:
            write_json(self.attempt.rank_end(self.rank), record)
        except OSError as exc:
            print(f"trainer: rank {self.rank}: cannot record how it ended ({exc})", file=sys.stderr, flush=True)

    def end_with_exception(self, exc: BaseException) -> None:
        cause = exception_cause(exc)
        error = error_signature(type(exc).__name__, str(exc))
        victim = cause is Cause.CRASH and is_peer_failure(f"{type(exc).__name__}: {exc}")
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" in {Path(frame[0].filename).name}:{frame[0].lineno}" if frame else ""
        host = socket.gethostname()
        what = "lost a peer" if victim else ("ran out of memory" if cause is Cause.OOM else "failed")
        self.end(cause, f"rank {self.rank} on {host} {what} at step {self.step}: {error}{where}", error=error,
                 victim=victim)
