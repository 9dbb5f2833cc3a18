"""The scheduler rows: each scheduler class checks itself (``doctor_checks(profile)``).

Like SkyPilot's ``sky check`` asking each cloud class, doctor asks the profile's
scheduler class (larsctl/schedulers/slurm.py, pbs.py, local.py) for its rows; the
classes know their commands and how to ask their controller.  This module has
what they share: the PATH check for a scheduler's commands, and :func:`ask`, a
query through the scheduler's own command runner (its timeout, its errors).
These run from larsctl's own environment: that is where ``submit`` runs them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from larsctl.doctor.report import Check, fail, ok
from larsctl.schedulers import SchedulerError, get_scheduler


def check_scheduler(profile) -> list[Check]:
    return get_scheduler(profile.scheduler).doctor_checks(profile)


def check_commands(kind: str, commands: tuple[str, ...]) -> Check:
    """One row: every command in ``commands`` is on PATH (named ``<kind> commands``)."""
    found = {c: shutil.which(c) for c in commands}
    missing = [c for c, p in found.items() if not p]
    if missing:
        have = [c for c, p in found.items() if p]
        return fail(f"{kind} commands", f"not on PATH: {', '.join(missing)}"
                                        + (f" (found {', '.join(have)})" if have else ""),
                    f"run larsctl on the cluster's login node, or `module load {kind}` first")
    dirs = sorted({str(Path(p).parent) for p in found.values()})
    return ok(f"{kind} commands", f"{', '.join(commands)} in {', '.join(dirs)}")


def ask(scheduler, argv: list[str]) -> tuple[bool, str]:
    """(whether ``argv`` answered with exit 0, its output or why it did not answer)."""
    try:
        r = scheduler.run(argv)
    except SchedulerError as exc:  # not on PATH, or no answer within the scheduler's timeout
        return False, str(exc)
    text = r.stdout + ("\n" if r.stdout and r.stderr else "") + r.stderr
    if r.returncode != 0:
        return False, text if text.strip() else f"exit {r.returncode}"
    return True, text
