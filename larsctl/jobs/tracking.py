"""A job's experiment-tracker run, from larsctl's side: created at submit, a file attached later.

The run itself (its identity, the backends, what the trainer sends) is trainer.tracking's:
the trainer's rank 0 logs to it in every segment, and larsctl creates it before the first.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from larsctl.errors import UserError
from larsctl.planning.spec import JobSpec


def apply_track(spec: JobSpec, track: dict | None) -> JobSpec:
    """``spec`` with a ``--track`` mapping applied (None: as the recipe says; {}: off), its paths absolute.
    Whether the tracker's library is installed is the spec's own check (JobSpec.check_runnable)."""
    if track is None:
        return spec
    if not track:
        return replace(spec, tracking=None)
    from larsctl.config.env import expand_path
    from trainer.tracking import TrackingError, TrackingSettings, merge

    base = spec.tracking.to_dict() if spec.tracking is not None else None
    try:
        settings = TrackingSettings.from_dict(merge(base, track), "--track").absolute(expand=expand_path)
    except TrackingError as exc:
        raise UserError(str(exc)) from None
    return replace(spec, tracking=settings)


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
