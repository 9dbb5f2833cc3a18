"""``larsctl logs``: a job's output, all ranks or one, optionally followed live.

The batch script's combined output lives in ``logs/`` (one file per segment or
scheduler run).  Every rank copies its own output to ``logs/ranks/rank.<R>.log`` on
the job's shared filesystem, whichever node it ran on (trainer/ranklog.py); a rank
that died before it opened that file is found in the combined output by the
launcher's rank prefix ("[1,0]<stdout>:", "[0]<stdout>:", "[default0]:").
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from larsctl.facts.jobdir import RANK_PREFIX, JobPaths


def _segment_key(path: Path):
    m = re.search(r"(\d+)", path.stem)
    return (int(m.group(1)) if m else -1, path.name)


def combined_logs(paths: JobPaths) -> list[Path]:
    """The scripts' own output files, in segment order."""
    if not paths.logs.is_dir():
        return []
    return sorted((p for p in paths.logs.iterdir() if p.is_file()), key=_segment_key)


def filter_rank(lines, rank: int):
    """Lines a launcher tagged with ``rank``, prefix removed."""
    for line in lines:
        m = RANK_PREFIX.match(line)
        if m and int(m.group("rank")) == rank:
            yield line[m.end():]


class _Tail:
    """Read what was appended to a file since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial = path, 0, ""

    def read_lines(self) -> list[str]:
        try:
            with open(self.path, errors="replace") as fh:
                fh.seek(self.offset)
                data = fh.read()
                self.offset = fh.tell()
        except FileNotFoundError:
            return []
        data = self.partial + data
        lines = data.split("\n")
        self.partial = lines.pop()  # an unfinished last line waits for its end
        return [line + "\n" for line in lines]


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--rank", type=click.IntRange(min=0), help="Only this rank's output.")
def logs(job_id, follow, rank):
    """Print a job's output (every segment, all ranks unless --rank).

    \b
    Examples:
      larsctl logs demo-20250101-120000-ab12
      larsctl logs demo-20250101-120000-ab12 --rank 1 --follow
    """
    from larsctl.errors import UserError
    from larsctl.jobs import lifecycle
    from larsctl.jobs.registry import Registry

    registry = Registry()
    record = registry.get(job_id)
    lifecycle.require_dir(record)
    paths = record.paths
    ranks = lifecycle.spec_of(record).plan.gpus
    if rank is not None and rank >= ranks:
        raise UserError(f"--rank {rank}: job {job_id} has {ranks} ranks (0..{ranks - 1})")
    tails: dict[Path, _Tail] = {}

    def pick(lines: list[str], filtered: bool) -> list[str]:
        return list(filter_rank(lines, rank)) if filtered else lines

    def sources() -> tuple[list[Path], bool]:
        """(files, whether lines must be filtered by rank prefix)."""
        if rank is not None and paths.rank_log(rank).is_file():
            return [paths.rank_log(rank)], False
        # A rank that died before it could open its own log: the launcher's prefixes.
        return combined_logs(paths), rank is not None

    def drain(final: bool) -> None:
        files, filtered = sources()
        for path in files:
            tail = tails.setdefault(path, _Tail(path))
            lines = tail.read_lines()
            if final and tail.partial:  # an unterminated last line
                lines.append(tail.partial + "\n")
                tail.partial = ""
            sys.stdout.write("".join(pick(lines, filtered)))
        sys.stdout.flush()

    if follow:
        for _ in lifecycle.watch(registry, [job_id]):
            drain(final=False)
    drain(final=True)  # what was written between the last read and the end
