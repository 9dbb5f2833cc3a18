"""Every file of one job, derived from its directory ``<workdir>/<job-id>/``.

Like submitit's ``JobPaths``, nothing else in larsctl spells a job file name: the
schedulers' scripts and logs, status, logs, resume and the registry all ask this
object.  The trainer's own outputs (tensorboard/, checkpoints/, metrics.jsonl) are
named by the trainer (trainer/outputs.py).  The directory alone is enough to
rebuild a lost registry record (``job.json``).

Writes are atomic (temp file in the same directory, fsync, ``os.replace``) so a
crash or a full disk never leaves a half-written job.yaml or script behind.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from larsctl.errors import Failure
from trainer import fsio, outputs

# Rank prefixes the launchers put in front of each line of a combined log:
# mpirun --tag-output "[1,3]<stdout>:", horovodrun "[3]<stderr>:", torchrun --tee "[default3]:".
RANK_PREFIX = re.compile(r"^\[(?:\d+,)?(?:default)?(?P<rank>\d+)\](?:<std(?:out|err)>)?:")
# Batch script file name extension per scheduler.
SCRIPT_EXTENSIONS = {"slurm": "sbatch", "pbs": "pbs", "local": "sh"}
RESTARTS = "restarts"


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

    def rank_log(self, rank: int) -> Path:
        """Everything one rank wrote (the trainer copies its own stdout and stderr there)."""
        return self.root / outputs.RANK_LOG.format(rank=rank)

    @property
    def checkpoints(self) -> Path:
        return self.root / outputs.CHECKPOINT_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / outputs.TENSORBOARD_DIR

    @property
    def metrics(self) -> Path:
        return self.root / outputs.METRICS_FILE

    @property
    def restarts(self) -> Path:
        """One line of ``key=value`` words per requeue, appended by the batch scripts."""
        return self.root / RESTARTS

    @property
    def state(self) -> Path:
        """Local jobs only: per-segment status files written by the script."""
        return self.root / "state"

    # -- batch scripts and the schedulers' own logs ------------------------------------
    def script(self, scheduler: str, segment: int = 0) -> Path:
        """The batch script of one segment: ``job.sbatch``, then ``job.1.sbatch``, ``job.2.sbatch``...

        Segments (chain segments, then one per ``larsctl resume``) count from 0 in every
        file name here; only the scheduler's job name counts from 1 (``demo.2of3``).
        """
        ext = SCRIPT_EXTENSIONS[scheduler]
        return self.root / (f"job.{ext}" if segment == 0 else f"job.{segment}.{ext}")

    def segments(self, scheduler: str) -> int:
        """How many segment scripts the job directory holds (the next segment's index)."""
        n = 0
        while self.script(scheduler, n).exists():
            n += 1
        return n

    def slurm_log(self, stream: str = "out") -> Path:
        """Slurm's output file pattern (``%j``: the Slurm job id, one file per run)."""
        return self.logs / f"slurm-%j.{stream}"

    def pbs_log(self, job_id_expr: str) -> str:
        """The PBS script's own output file, relative to the job directory (``job_id_expr``
        is expanded by the batch shell)."""
        return f"{self.logs.name}/pbs-{job_id_expr}.out"

    def segment_log(self, segment: int = 0) -> Path:
        """Local jobs: combined stdout+stderr of one segment's script."""
        return self.logs / f"segment-{segment}.out"

    def segment_status(self, segment: int) -> Path:
        return self.state / f"segment-{segment}.status"

    def segment_pid(self, segment: int) -> Path:
        return self.state / f"segment-{segment}.pid"

    def segment_started(self, segment: int) -> Path:
        return self.state / f"segment-{segment}.started"

    def cancel_marker(self, segment: int) -> Path:
        return self.state / f"segment-{segment}.cancel"

    # -- reading -------------------------------------------------------------------------
    def restart_records(self) -> list[dict[str, str]]:
        """The restarts the batch scripts recorded, oldest first (``key=value`` words per line)."""
        try:
            lines = self.restarts.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [dict(w.split("=", 1) for w in line.split() if "=" in w) for line in lines if line.strip()]

    def read_restarts(self) -> int:
        """How many times the job was requeued (all segments)."""
        return len(self.restart_records())

    def resubmitted_ids(self) -> list[str]:
        """Scheduler ids a batch script submitted itself as (PBS requeues: ``next=<id>``)."""
        return [r["next"] for r in self.restart_records() if r.get("next")]

    def exists(self) -> bool:
        return self.job_yaml.is_file()


def no_space(exc: OSError, path: Path | str) -> Failure:
    """The one line for a full disk (or quota, or file size limit) while writing ``path``."""
    return Failure(f"no space left while writing {path}: {os.strerror(exc.errno)}")


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """:func:`trainer.fsio.atomic_write`; a full disk is one :class:`Failure` line.

    ``path`` is left untouched (old content or absent) and no temp file stays behind.
    """
    try:
        fsio.atomic_write(path, data, mode)
    except OSError as exc:
        if exc.errno in fsio.NO_SPACE:
            raise no_space(exc, Path(path)) from None
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    with open(path) as fh:
        return json.load(fh)


def create(paths: JobPaths, files: dict[Path, str | bytes], executable: tuple[Path, ...] = ()) -> None:
    """Create the job directory with its sub-directories and ``files`` (path -> content).

    All or nothing: if anything fails (a full disk, a permission error) the
    directory is removed again, so no half-made job is left to confuse status.
    The directory must not exist yet (job ids are unique, so it never does
    unless two hosts share a workdir; then the caller picks a new id).
    """
    paths.root.parent.mkdir(parents=True, exist_ok=True)
    paths.root.mkdir()  # FileExistsError reaches the caller on purpose
    try:
        for sub in (paths.logs, paths.rank_log(0).parent, paths.checkpoints, paths.tensorboard, paths.state):
            sub.mkdir()
        for path, content in files.items():
            atomic_write(path, content, 0o755 if path in executable else 0o644)
    except BaseException as exc:
        shutil.rmtree(paths.root, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in fsio.NO_SPACE:
            raise no_space(exc, paths.root) from None
        raise
