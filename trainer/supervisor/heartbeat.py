"""A rank's heartbeat: its progress, published by a small side process, never by the step.

The rank writes three integers into a tiny memory-mapped file on its own node (a counter
that moves on every change, the optimizer step, the phase) with one ``struct.pack_into``:
no system call, no collective, no host-device sync.  A side process (``python -m
trainer.supervisor heartbeat``, standard library only, started by the rank) reads them
every ``period`` seconds and rewrites ``attempts/<n>/heartbeat.<R>.json`` on the job's
file system with what it read, the rank's process state from /proc (``T``: stopped) and
the time.  So the watchdog can tell apart:

* a node that died: the heartbeat files of its ranks stop changing;
* a stopped or stuck rank: its file keeps changing, its counter does not (state ``T`` when
  the process was stopped, phase ``data`` when it waits for a batch);
* a rank that ended: its side process writes a last record (``gone``) at once (it reads EOF
  on a pipe only the rank holds), with the node's OOM-killer count since the start
  (``oom_kills``), before a launcher tearing down the rest of the step can end it too.

Dead-man switch: when the counter has not moved for ``deadman`` seconds (twice the bound;
``startup_deadman`` before the first step), the side process kills its rank with SIGKILL.
A rank blocked in a collective whose peer died therefore never outlives the segment, even
when the watchdog and the batch shell died with the node they ran on.
"""
from __future__ import annotations

import argparse
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer.supervisor.records import write_json

PHASES = ("startup", "data", "step", "validate", "checkpoint", "done")
_INDEX = {name: i for i, name in enumerate(PHASES)}
_LAYOUT = struct.Struct("<qqq")  # counter, step, phase
PARENT_POLL_S = 0.5


def period_for(bound_s: float) -> float:
    """Seconds between heartbeat writes: a tenth of the bound, 1 to 15 s."""
    return min(15.0, max(1.0, bound_s / 10))


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class Heartbeat:
    """This rank's progress for its side process; ``set`` is the only call on the training path."""

    def __init__(self, out: Path, rank: int, *, period_s: float, deadman_s: float, startup_deadman_s: float):
        fd, self.shm_path = tempfile.mkstemp(prefix=f"larsctl-heartbeat-{rank}-", dir=_shm_dir())
        try:
            os.ftruncate(fd, _LAYOUT.size)
            self._mm = mmap.mmap(fd, _LAYOUT.size)
        finally:
            os.close(fd)
        self._counter = 0
        self.set("startup", 0)
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root,
                                                                         os.environ.get("PYTHONPATH")])))
        # A pipe whose write end only this process holds: the side process reads EOF the moment
        # the rank dies (before a launcher tears the rest of the step down), and says so.
        watch, self._alive_fd = os.pipe()
        argv = [sys.executable, "-m", "trainer.supervisor", "heartbeat", "--shm", self.shm_path,
                "--out", str(out), "--parent", str(os.getpid()), "--rank", str(rank),
                "--period", f"{period_s:g}", "--deadman", f"{deadman_s:g}",
                "--startup-deadman", f"{startup_deadman_s:g}", "--watch-fd", str(watch)]
        # Its own session: a launcher that kills the rank's process group leaves it to write
        # the rank's last record.
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                            start_new_session=True, close_fds=True, pass_fds=(watch,))
        finally:
            os.close(watch)

    def set(self, phase: str, step: int) -> None:
        self._counter += 1
        _LAYOUT.pack_into(self._mm, 0, self._counter, step, _INDEX[phase])

    def close(self, step: int) -> None:
        """The rank is done: say so; the side process writes the last record once the rank exits."""
        self.set("done", step)


# -- the side process ----------------------------------------------------------------------
def proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def _oom_kills() -> int | None:
    try:
        with open("/proc/vmstat") as fh:
            for line in fh:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _wait(watch_fd: int | None, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when the rank's pipe closed (the rank died) meanwhile."""
    if watch_fd is None:
        time.sleep(seconds)
        return False
    ready, _, _ = select.select([watch_fd], [], [], seconds)
    return bool(ready) and os.read(watch_fd, 1) == b""


def run_side_process(shm: str, out: Path, parent: int, rank: int, period: float, deadman: float,
                     startup_deadman: float, watch_fd: int | None = None) -> int:
    fd = os.open(shm, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, _LAYOUT.size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    host = socket.gethostname()
    oom_start = _oom_kills()
    seq, last_counter, moved_at, next_write = 0, None, time.monotonic(), 0.0
    gone, parent_closed = None, False
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the rank's launcher may TERM its whole tree
    while True:
        now = time.monotonic()
        counter, step, phase = _LAYOUT.unpack_from(mm, 0)
        if counter != last_counter:
            last_counter, moved_at = counter, now
        state = proc_state(parent)
        if parent_closed or os.getppid() != parent or state in (None, "Z", "X"):
            gone = "exited"
        elif PHASES[phase] != "done" and now - moved_at > (startup_deadman if PHASES[phase] == "startup"
                                                            else deadman):
            try:
                os.kill(parent, signal.SIGKILL)
            except ProcessLookupError:
                pass
            gone = "deadman"
        if gone or now >= next_write:
            seq += 1
            record = {"rank": rank, "host": host, "pid": parent, "seq": seq, "counter": counter, "step": step,
                      "phase": PHASES[phase], "state": state, "time": time.time(), "period": period,
                      "idle_s": round(now - moved_at, 1)}
            if gone:
                record["gone"] = gone
                now_oom, start_oom = _oom_kills(), oom_start
                if now_oom is not None and start_oom is not None:
                    record["oom_kills"] = now_oom - start_oom
            try:
                write_json(out, record, durable=bool(gone))
            except OSError as exc:  # a full or vanished file system: the watchdog will see silence
                print(f"trainer heartbeat: rank {rank}: cannot write {out}: {exc}", file=sys.stderr, flush=True)
            next_write = now + period
        if gone:
            try:
                os.unlink(shm)
            except OSError:
                pass
            return 0
        if _wait(watch_fd, min(PARENT_POLL_S, max(0.0, next_write - time.monotonic()))):
            parent_closed = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shm", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--parent", required=True, type=int)
    parser.add_argument("--rank", required=True, type=int)
    parser.add_argument("--period", required=True, type=float)
    parser.add_argument("--deadman", required=True, type=float)
    parser.add_argument("--startup-deadman", required=True, type=float)
    parser.add_argument("--watch-fd", type=int, help="a pipe the rank holds open while it lives")


def main(args: argparse.Namespace) -> int:
    return run_side_process(args.shm, args.out, args.parent, args.rank, args.period, args.deadman,
                            args.startup_deadman, args.watch_fd)
