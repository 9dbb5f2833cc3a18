"""The scheduler rows: each scheduler class checks itself (``doctor_checks(profile)``).

Like SkyPilot's ``sky check`` asking each cloud class, doctor asks the profile's
scheduler class (larsctl/schedulers/slurm.py, pbs.py, local.py) for its rows; the
classes know their commands and how to ask their controller.  This module has
what they share: the PATH check for a scheduler's commands, and :func:`ask`, a
query through the scheduler's own command runner (its timeout, its errors).
These run from larsctl's own environment: that is where ``submit`` runs them.
"""
from __future__ import annotations

from larsctl.doctor.report import Check
from larsctl.schedulers import get_scheduler


def check_scheduler(profile) -> list[Check]:
    return get_scheduler(profile.scheduler).doctor_checks(profile)
