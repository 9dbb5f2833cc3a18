"""Schedulers behind one interface, loaded lazily by name (slurm, pbs, local)."""
from __future__ import annotations

import importlib

from larsctl.facts.states import JobState
from larsctl.schedulers.base import BatchRequest, JobInfo, Scheduler, SchedulerError

_SCHEDULERS = {
    "slurm": "larsctl.schedulers.slurm:SlurmScheduler",
    "pbs": "larsctl.schedulers.pbs:PbsScheduler",
    "local": "larsctl.schedulers.local:LocalScheduler",
}


def get_scheduler(name: str, **options) -> Scheduler:
    """The scheduler for a profile's ``scheduler`` field."""
    try:
        module_name, cls = _SCHEDULERS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {sorted(_SCHEDULERS)}") from None
    return getattr(importlib.import_module(module_name), cls)(**options)


__all__ = ["BatchRequest", "JobInfo", "JobState", "Scheduler", "SchedulerError", "get_scheduler"]
