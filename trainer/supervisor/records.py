"""The records of a job's segments: ``<job_dir>/attempts/<n>/``, one directory per segment.

    attempts/current        the number of the segment running now (the ranks read it)
    attempts/<n>/start.json the batch script's start: time, host, scheduler id, allocation
    attempts/<n>/end.json   its end: launcher exit code, signal, the derived cause, the decision
    attempts/<n>/rank.<R>.json       how rank R ended, in its own words (cause, step, error)
    attempts/<n>/heartbeat.<R>.json  rank R's progress, rewritten every few seconds by its
                                     heartbeat process (trainer.supervisor.heartbeat)
    attempts/<n>/watchdog.json       the watchdog's verdict, when it ended the ranks
    attempts/<n>/observed.json       what the watchdog saw last (by its own clock)

Every file is written whole (temp file, rename), so a reader never sees half of one; a
file that cannot be parsed reads as absent.  Each file has one writer: the batch shell
(start, end), one rank (rank.R), its heartbeat process, or the watchdog; so nothing here
relies on appends to a shared file, which network file systems do not make atomic.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ATTEMPTS = "attempts"
CURRENT = "current"
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class AttemptPaths:
    """The files of segment ``number`` of the job in ``job_dir``."""

    job_dir: Path
    number: int

    @property
    def dir(self) -> Path:
        return Path(self.job_dir) / ATTEMPTS / str(self.number)

    @property
    def start(self) -> Path:
        return self.dir / "start.json"

    @property
    def end(self) -> Path:
        return self.dir / "end.json"

    def rank_end(self, rank: int) -> Path:
        return self.dir / f"rank.{rank}.json"

    def heartbeat(self, rank: int) -> Path:
        return self.dir / f"heartbeat.{rank}.json"

    @property
    def watchdog(self) -> Path:
        return self.dir / "watchdog.json"

    @property
    def observed(self) -> Path:
        return self.dir / "observed.json"


def attempts_dir(job_dir: Path | str) -> Path:
    return Path(job_dir) / ATTEMPTS


def write_json(path: Path, obj: Any, durable: bool = True) -> None:
    """Write ``obj`` to ``path`` whole: temp file in the same directory, (fsync,) rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, sort_keys=True)
            fh.write("\n")
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: Path) -> dict | None:
    """The object in ``path``; None when it is missing or not a JSON object."""
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def numbers(job_dir: Path | str) -> list[int]:
    """The segment numbers recorded for a job, oldest first."""
    try:
        names = os.listdir(attempts_dir(job_dir))
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if _NUMBER.fullmatch(n))


def new_attempt(job_dir: Path | str) -> AttemptPaths:
    """Create the next segment's directory (mkdir is the claim) and make it the current one."""
    root = attempts_dir(job_dir)
    root.mkdir(parents=True, exist_ok=True)
    n = (numbers(job_dir) or [-1])[-1] + 1
    while True:
        try:
            (root / str(n)).mkdir()
            break
        except FileExistsError:
            n += 1
    paths = AttemptPaths(Path(job_dir), n)
    fd, tmp = tempfile.mkstemp(prefix=f".{CURRENT}.", suffix=".tmp", dir=root)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{n}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / CURRENT)
    return paths


def current_attempt(job_dir: Path | str) -> AttemptPaths | None:
    """The segment the batch script started last (None outside a larsctl job)."""
    try:
        text = (attempts_dir(job_dir) / CURRENT).read_text().strip()
    except OSError:
        return None
    return AttemptPaths(Path(job_dir), int(text)) if _NUMBER.fullmatch(text) else None


def by_rank(directory: Path, prefix: str) -> dict[int, dict]:
    out: dict[int, dict] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        m = re.fullmatch(rf"{prefix}\.(\d+)\.json", name)
        if m:
            record = read_json(directory / name)
            if record is not None:
                out[int(m.group(1))] = record
    return dict(sorted(out.items()))


@dataclass
class Attempt:
    """Everything recorded about one segment."""

    paths: AttemptPaths
    start: dict | None = None
    end: dict | None = None
    ranks: dict[int, dict] = field(default_factory=dict)
    heartbeats: dict[int, dict] = field(default_factory=dict)
    watchdog: dict | None = None
    observed: dict | None = None

    @property
    def number(self) -> int:
        return self.paths.number

    @property
    def closed(self) -> bool:
        return self.end is not None


def read_attempt(paths: AttemptPaths) -> Attempt:
    return Attempt(paths, read_json(paths.start), read_json(paths.end), by_rank(paths.dir, "rank"),
                   by_rank(paths.dir, "heartbeat"), read_json(paths.watchdog), read_json(paths.observed))


def read_attempts(job_dir: Path | str) -> list[Attempt]:
    """Every segment of a job, oldest first."""
    return [read_attempt(AttemptPaths(Path(job_dir), n)) for n in numbers(job_dir)]
