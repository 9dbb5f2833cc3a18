"""Every file of one sweep, derived from its directory ``<workdir>/sweeps/<sweep-id>/``.

A sweep is a file first, then jobs: ``sweep.json`` (the grid, target and protocol, each
point's job id, each job array, the submit state) is written before any job is submitted,
so a submission that stops half way leaves a sweep that ``larsctl sweep resume`` completes.
Its jobs are ordinary job directories beside it in the workdir (``<workdir>/<job-id>/``).

On a scheduler with job arrays each submission is one array: its batch script
``array-<n>.<ext>`` and its tasks file ``array-<n>.tasks`` (line i+1: the job directory of
array task i), the array's own output under ``logs/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from larsctl.facts.jobdir import SCRIPT_EXTENSIONS

SWEEPS_DIR = "sweeps"


@dataclass(frozen=True)
class SweepPaths:
    """The files of the sweep living in ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, workdir: Path, sweep_id: str) -> SweepPaths:
        return cls(Path(workdir) / SWEEPS_DIR / sweep_id)

    @property
    def sweep_id(self) -> str:
        return self.root.name

    @property
    def workdir(self) -> Path:
        """Where the sweep's job directories are."""
        return self.root.parent.parent

    @property
    def sweep_json(self) -> Path:
        return self.root / "sweep.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def tasks(self, number: int) -> Path:
        """The job directories of array ``number``, one a line, in task order."""
        return self.root / f"array-{number}.tasks"

    def array_script(self, scheduler: str, number: int) -> Path:
        return self.root / f"array-{number}.{SCRIPT_EXTENSIONS[scheduler]}"


def sweep_of_job_dir(job_dir: Path, sweep_id: str) -> SweepPaths:
    """The sweep directory of a job of sweep ``sweep_id`` (beside the job, in its workdir)."""
    return SweepPaths.of(Path(job_dir).parent, sweep_id)
