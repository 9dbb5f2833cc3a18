"""One interface for every scheduler: render what would be submitted, then submit it.

Like TorchX's schedulers, submission is split in two: ``dryrun`` is pure (it
returns the batch script and the command line that would submit it) and
``schedule`` is the only side effect.  ``describe`` maps the scheduler's own
state names onto :class:`JobState`; ``cancel`` is safe to repeat.
"""
from __future__ import annotations

import abc
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from larsctl.facts.jobdir import atomic_write
from larsctl.facts.states import JobState


@dataclass(frozen=True)
class BatchRequest:
    """Everything ``schedule`` needs, computed without side effects.

    script: the full batch script text (runs on its own with sbatch/qsub/bash).
    script_path: where ``schedule`` writes it (inside the job directory).
    submit_argv: the submit command, without the script path (appended last),
        e.g. ["sbatch", "--parsable"]; empty for the local scheduler.
    launch_line: the line that starts the trainer on every rank (for --dry-run).
    segment: chain segment index (0-based) this request is for.
    """

    script: str
    script_path: Path
    submit_argv: list[str]
    launch_line: str
    segment: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:  # what --dry-run prints
        argv = " ".join([*self.submit_argv, str(self.script_path)])
        return f"# submit: {argv}\n# launch: {self.launch_line}\n{self.script}"


@dataclass(frozen=True)
class JobInfo:
    """What the scheduler says about one job."""

    scheduler_id: str
    state: JobState
    restarts: int = 0
    reason: str = ""  # scheduler's pending reason or exit information
    # For a job that ended: the cause its own record gives (trainer.supervisor.causes tables),
    # read for a segment whose batch script could not record its end.
    cause: str | None = None


class SchedulerError(Exception):
    """The scheduler command failed or is unreachable; the message carries its stderr."""


class Scheduler(abc.ABC):
    """Submit, describe and cancel jobs on one kind of scheduler."""

    name: str
    # Job arrays (a sweep as one scheduler job): dryrun_task, dryrun_array and task_id.
    arrays: ClassVar[bool] = False

    @abc.abstractmethod
    def dryrun(self, spec, job_dir: Path, *, job_id: str, segment: int = 0,
               segments: int = 1, max_restarts: int = 0) -> BatchRequest:
        """Render the batch script for ``spec`` (a larsctl.planning.spec.JobSpec) in ``job_dir``."""

    def write(self, request: BatchRequest) -> None:
        """Write the request's script (executable, atomically) where it will run from."""
        atomic_write(request.script_path, request.script, 0o755)

    @abc.abstractmethod
    def schedule(self, request: BatchRequest, *, after: str | None = None,
                 after_kind: str = "afterany") -> str:
        """Write the script and submit it; return the scheduler's job id.

        ``after``: a scheduler job id this one must wait for (chain segments),
        with dependency type ``after_kind`` (afterok/afterany).
        """

    @abc.abstractmethod
    def describe(self, scheduler_ids: list[str]) -> dict[str, JobInfo]:
        """States of several jobs at once (one scheduler call where possible)."""

    @abc.abstractmethod
    def cancel(self, scheduler_id: str) -> None:
        """Cancel a job; cancelling a finished or unknown job is not an error."""

    def idle_nodes(self, profile) -> int | None:
        """Nodes of the profile's partition idle now (a shrunk job's grow-back); None: cannot tell."""
        return None


@dataclass
class CommandLineScheduler(Scheduler):
    """A scheduler driven by its command-line tools (sbatch..., qsub...), each call bounded
    by ``timeout`` seconds; a missing tool or a silent controller is a SchedulerError."""

    timeout: float = 30.0
    system: ClassVar[str]          # "Slurm", "PBS": named when its commands are missing
    cancel_command: ClassVar[str]  # scancel, qdel

    def run(self, argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, cwd=cwd)
        except FileNotFoundError:
            raise SchedulerError(f"{argv[0]}: command not found (is this a {self.system} login node?)") from None
        except subprocess.TimeoutExpired:
            raise SchedulerError(f"{argv[0]} did not answer within {self.timeout:.0f}s") from None

    def cancel(self, scheduler_id: str) -> None:
        r = self.run([self.cancel_command, str(scheduler_id)])
        if r.returncode == 0:
            return
        # Finished or unknown jobs are fine (cancel is idempotent); a live one is not.
        state = self.describe([str(scheduler_id)])[str(scheduler_id)].state
        if state is not JobState.UNKNOWN and not state.is_terminal:
            raise SchedulerError(f"{self.cancel_command} failed (exit {r.returncode}): {r.stderr.strip()}")
