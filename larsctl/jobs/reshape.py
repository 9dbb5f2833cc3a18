"""What ``larsctl resume --gpus N`` / ``--cluster OTHER`` checks and shows before it moves a job.

The job keeps its directory (its checkpoints, metrics, segments and identity), so another
cluster must reach it where it is: its workdir must be on the same file system.  Nothing is
copied unless the user does it; then the refusal says how, in one command line.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from larsctl.errors import UserError
from larsctl.planning.replan import shape_text
from larsctl.planning.spec import JobSpec


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a workdir not made yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_reachable(job_id: str, job_dir: Path, spec: JobSpec) -> None:
    """UserError (one line, the copy command) when ``spec``'s workdir is on another file system."""
    workdir = spec.profile.expanded_workdir()
    if os.stat(job_dir).st_dev == os.stat(_existing(workdir)).st_dev:
        return
    target = workdir / job_id
    copy = (f"rsync -a {shlex.quote(str(job_dir))}/ {shlex.quote(str(target))}/ && larsctl jobs --rebuild "
            f"{shlex.quote(str(target))} && larsctl resume {shlex.quote(job_id)} --cluster "
            f"{shlex.quote(spec.profile.name)}")
    raise UserError(f"job {job_id}: its directory {job_dir} is not on the file system of cluster "
                    f"{spec.profile.name}'s workdir {workdir}; nothing is copied for you: {copy}")


def comparison(old: JobSpec, new: JobSpec) -> str:
    """The old and the new split side by side, with the new estimate (``resume --dry-run``)."""
    est = new.plan.estimate
    rows = [("cluster", old.profile.name, new.profile.name),
            ("shape", shape_text(old.plan), shape_text(new.plan)),
            ("engine", str(old.profile.engine), str(new.profile.engine)),
            ("LR, warmup (epochs)", f"{old.plan.base_lr:g}, {old.plan.warmup_epochs:g}",
             f"{new.plan.base_lr:g}, {new.plan.warmup_epochs:g}"),
            ("steps per epoch", str(old.plan.estimate.steps_per_epoch), str(est.steps_per_epoch)),
            ("estimate (whole run)", f"{old.plan.estimate.total_seconds / 3600:.2f} h",
             f"{est.total_seconds / 3600:.2f} h, {est.gpu_hours:.2f} GPU-h")]
    width = max(len(r[0]) for r in rows)
    left = max(len(r[1]) for r in rows)
    lines = [f"# {'':<{width}}  {'before':<{left}}  after"]
    lines += [f"# {a:<{width}}  {b:<{left}}  {c}" for a, b, c in rows]
    return "\n".join(lines)
