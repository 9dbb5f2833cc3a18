"""A job's experiment-tracker run, from larsctl's side: created at submit, a file attached later.

The run itself (its identity, the backends, what the trainer sends) is trainer.tracking's:
the trainer's rank 0 logs to it in every segment, and larsctl creates it before the first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from larsctl.planning.spec import JobSpec


def create_run(spec: JobSpec, job_dir: Path, sweep: str, warn: Callable[[str], None]) -> None:
    """The job's tracker run (in ``sweep``'s experiment or group), before its first segment starts.
    An unreachable tracker is a warning: the first segment that reaches it creates the run."""
    if spec.tracking is None:
        return
    from trainer.tracking.runs import create_run as create

    create(job_dir, spec.tracking, spec.to_dict(), group=sweep or None, warn=warn)


def attach(job_dirs: list[Path], path: Path, warn: Callable[[str], None]) -> list[str]:
    """Attach ``path`` to the run of each tracked job among ``job_dirs``; the job directories it went to."""
    from trainer.tracking.runs import attach as attach_file

    done = []
    for job_dir in job_dirs:
        why = attach_file(job_dir, path)
        if why:
            warn(f"{path} not attached to the tracker run of {job_dir.name}: {why}")
        elif why == "":
            done.append(job_dir.name)
    return done
