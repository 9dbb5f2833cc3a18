"""What a job does after a segment ends: resume or stop, and why.

The cause's action comes from the job's FaultSettings (the profile's ``faults:``, then the
submit's ``--on-fault``).  A resume is refused when

* the job has used its restarts (``--max-restarts``, every requeue counts), or
* the cause is a limited one (crash, oom, unknown) and the job has already resumed
  ``crash_resumes`` times after such segments, or
* it is a crash loop: the segment before this one ended with the same cause at the same
  step with the same error, so a third try would only burn the allocation again.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.supervisor.causes import TABLE, Action, Cause, FaultSettings
from trainer.supervisor.classify import Ending


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(ending: Ending, history: list[dict], settings: FaultSettings, restarts: int,
           max_restarts: int) -> Decision:
    """``history``: the end records (end.json) of the job's earlier segments, oldest first."""
    cause = ending.cause
    action = settings.action(cause)
    if action is Action.STOP:
        how = "always" if TABLE[cause].fixed else "by the job's policy"
        return Decision(Action.STOP, f"{cause.value}: stop ({how})")
    previous = history[-1] if history else None
    if (TABLE[cause].limited and previous is not None and previous.get("cause") == cause.value
            and previous.get("step") == ending.step and previous.get("error") == ending.error):
        return Decision(Action.STOP, f"crash loop: two segments in a row ended with {cause.value} at step "
                                     f"{ending.step} ({ending.error or ending.detail}); not resuming")
    if TABLE[cause].limited:
        used = sum(1 for h in history if h.get("action") == Action.RESUME.value
                   and TABLE.get(_cause(h.get("cause")), TABLE[Cause.UNKNOWN]).limited)
        if used >= settings.crash_resumes:
            return Decision(Action.STOP, f"{cause.value}: {used} of {settings.crash_resumes} resumes after "
                                         "crashes used")
    if restarts >= max_restarts:
        return Decision(Action.STOP, f"{cause.value}: no restarts left ({restarts} of {max_restarts} used)")
    return Decision(Action.RESUME, f"{cause.value}: resume (restart {restarts + 1} of {max_restarts})")


def _cause(value) -> Cause:
    try:
        return Cause(value)
    except ValueError:
        return Cause.UNKNOWN
