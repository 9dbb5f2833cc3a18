"""The walltime a job asks the scheduler for: its estimate with a margin, capped.

Pure functions returning a frozen ``Walltime``; no I/O.  Asking for the profile's
maximum (48 h for a job estimated at 1 h 19 min) keeps a job out of backfill on every
real cluster, so each job asks for what it needs:

    jobs    = ceil(work / (walltime - signal margin - start-up))   (chained when > 1)
    need    = start-up + work / jobs
    request = max(need x factor, need + minimum) + signal margin, in whole minutes,
              at most the profile's walltime (then in the profile's own form)

``work`` is the estimate's training and validation; each chained job pays its own
start-up.  The margin (``factor``, ``minimum``) is the profile's ``walltime_margin``
(default 1.5x, at least 10 minutes more).  The signal margin comes on top, so USR2
arrives after the job's work with its margin, and it always fits: the request is
longer than the signal margin.  Every job of a chain, every requeue and every resume
asks for the same: a resumed job never has more left than one job's share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from larsctl.facts.rules import DEFAULT_WALLTIME_FACTOR as DEFAULT_FACTOR
from larsctl.facts.rules import DEFAULT_WALLTIME_MINIMUM_S as DEFAULT_MINIMUM_SECONDS
from larsctl.format import duration


@dataclass(frozen=True)
class Walltime:
    seconds: int            # asked per job (each segment of a chain)
    text: str               # as the scripts write it: HH:MM:SS, or the profile's own form
    jobs: int               # chained jobs the work needs
    need_seconds: float     # one job's start-up and share of the work
    factor: float
    minimum_seconds: int
    capped: bool            # the profile's maximum, shorter than need with margin
    reason: str


def hms(seconds: int) -> str:
    """``HH:MM:SS`` (hours past 24 as they are: both Slurm and PBS read it)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def chained_jobs(work_seconds: float, startup_seconds: float, usable_seconds: int) -> int:
    """Jobs of ``usable_seconds`` (walltime less signal margin) that hold the work.

    Each pays its start-up, unless the start-up alone is longer than a job may run
    (then it is not counted: only tests run such walltimes).
    """
    per_job = usable_seconds - startup_seconds
    if per_job <= 0:
        per_job = usable_seconds
    return max(1, math.ceil(work_seconds / per_job))


def request_walltime(*, work_seconds: float, startup_seconds: float, maximum_seconds: int,
                     maximum_text: str | None, signal_margin_seconds: int,
                     factor: float = DEFAULT_FACTOR,
                     minimum_seconds: int = DEFAULT_MINIMUM_SECONDS) -> Walltime:
    """What each job asks for (see the module docstring)."""
    usable = maximum_seconds - signal_margin_seconds
    jobs = chained_jobs(work_seconds, startup_seconds, usable)
    need = startup_seconds + work_seconds / jobs
    with_margin = max(need * factor, need + minimum_seconds)
    asked = 60 * math.ceil((with_margin + signal_margin_seconds) / 60)
    capped = asked > maximum_seconds
    seconds = maximum_seconds if capped else asked
    text = (maximum_text or hms(seconds)) if capped else hms(seconds)
    margin = (f"estimate {duration(need)} x {factor:g} (at least + {duration(minimum_seconds)}) "
              f"= {duration(with_margin)}, + {signal_margin_seconds}s signal margin")
    each = margin + (f", is longer: {text}, the profile's maximum" if capped
                     else f", in whole minutes; the profile allows {maximum_text or hms(maximum_seconds)}")
    if jobs > 1:
        per_job = usable - startup_seconds if usable > startup_seconds else usable
        each = (f"estimate {duration(work_seconds)} of work in {jobs} chained jobs "
                f"({duration(per_job)} each after start-up and signal margin); each: " + each)
    return Walltime(seconds=seconds, text=text, jobs=jobs, need_seconds=need, factor=factor,
                    minimum_seconds=minimum_seconds, capped=capped, reason=each)


def job_walltime(spec) -> Walltime:
    """The request in ``spec`` (a JobSpec); the profile's walltime for a job.yaml from before
    requests were planned (a resumed old job asks for what it asked before)."""
    if spec.plan.walltime is not None:
        return spec.plan.walltime
    profile = spec.profile
    return Walltime(seconds=profile.walltime_seconds, text=profile.walltime,
                    jobs=spec.plan.jobs_needed, need_seconds=0.0, factor=1.0, minimum_seconds=0,
                    capped=True, reason="the profile's walltime (planned before requests were)")
