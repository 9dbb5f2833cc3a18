"""What a waiting job does about its nodes: shrink after a node failure, grow back later.

After a segment ended as ``node_fail`` the job is requeued and waits for its full size.  With
``faults.shrink_after_s`` set, a job that has waited that long goes on on the nodes that are
left: re-planned keeping its effective batch (larsctl.planning.replan), the waiting run
cancelled and the job resumed (lifecycle.resume).  With ``faults.grow_back``, a shrunk job that
waits again (after any segment) goes back to its first shape once the scheduler has that many
nodes idle.  It is applied whenever larsctl looks at the job with the scheduler (``status``,
``jobs``, ``status --watch``, ``submit --follow``), so one of those running now and then (a
``--watch``, a cron line) is what carries a job through a weekend.
"""
from __future__ import annotations

import calendar
import time

from larsctl.errors import Failure, UserError, one_line
from larsctl.planning.replan import feasible_gpus
from larsctl.schedulers import get_scheduler
from trainer.supervisor.causes import Cause

WAITING = ("PENDING", "REQUEUED")


def _seconds_since(iso: str | None) -> float:
    if not iso:
        return 0.0
    return time.time() - calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def _shrink_to(spec, last) -> int | None:
    """The GPU count to go on with after ``last`` (a node_fail segment), or None."""
    failed = {h for h in (last.host or "").split(",") if h}
    shape = last.shape or {}
    left = (shape.get("nodes") or spec.plan.nodes) - len(failed)
    if not failed or left < 1:
        return None
    room = left * spec.plan.gpus_per_node
    counts = [g for g in feasible_gpus(spec, spec.profile) if g <= room]
    return counts[-1] if counts and counts[-1] < spec.plan.gpus else None


def _grow_to(spec, first, scheduler) -> int | None:
    """The first segment's GPU count when the job runs smaller now and the nodes are idle."""
    shape = first.shape or {}
    gpus, nodes = shape.get("gpus"), shape.get("nodes")
    if not gpus or gpus <= spec.plan.gpus:
        return None
    idle = scheduler.idle_nodes(spec.profile)
    return gpus if idle is not None and idle >= nodes else None


def adapt(registry, rows, warn) -> list[str]:
    """Apply the shrink and grow-back policies to the waiting jobs among ``rows``; what was done."""
    from larsctl.jobs.lifecycle import DEFAULT_MAX_RESTARTS, resume, spec_of

    done = []
    for row in rows:
        ended = [s for s in row.segments if s.cause]
        if row.state.value not in WAITING or not ended or ended[-1].action != "resume":
            continue
        try:
            spec = spec_of(row.record)
        except Failure:
            continue
        last, settings = ended[-1], spec.faults
        gpus, why = None, ""
        if last.cause == Cause.NODE_FAIL.value and settings.shrink_after_s is not None \
                and _seconds_since(last.ended) >= settings.shrink_after_s:
            gpus = _shrink_to(spec, last)
            why = f"{last.host} did not come back within {settings.shrink_after_s}s"
        elif settings.grow_back:
            gpus = _grow_to(spec, row.segments[0], get_scheduler(spec.profile.scheduler))
            why = "the nodes of its first shape are idle again"
        if gpus is None:
            continue
        try:
            resume(registry, row.record.id, 1, DEFAULT_MAX_RESTARTS, warn, gpus=gpus, force=True)
        except (UserError, Failure) as exc:
            warn(f"job {row.record.id}: could not go on on {gpus} GPUs: {one_line(exc.message)}")
            continue
        done.append(f"job {row.record.id}: {why}: resumed on {gpus} GPUs (was {spec.plan.gpus}), effective batch "
                    f"{spec.plan.effective_batch} kept")
    return done
