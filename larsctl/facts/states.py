"""Job states: the one enum every scheduler maps onto, and which states are still moving.

``ACTIVE`` jobs may still change (status polls them, resume refuses them);
``TERMINAL`` ones never will (watch, follow and ``logs --follow`` stop, cancel leaves
them alone, resume may start them again).  PREEMPTED is terminal: with Slurm's
PreemptMode=CANCEL nothing brings the job back but ``larsctl resume``.  UNKNOWN is
neither (the scheduler forgot the job or cannot be asked).
"""
from __future__ import annotations

import enum


class JobState(str, enum.Enum):
    SUBMITTING = "SUBMITTING"  # the record exists, the scheduler has not answered yet
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    REQUEUED = "REQUEUED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


ACTIVE = frozenset({JobState.SUBMITTING, JobState.PENDING, JobState.RUNNING, JobState.REQUEUED})
TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED,
                      JobState.PREEMPTED})


def aggregate(states: list[JobState]) -> JobState:
    """One state for a job made of several scheduler jobs (chain segments, resumes, PBS requeues).

    The first one still active wins; otherwise the last one's final state (a chain
    that timed out in segment 0 and completed in segment 1 is COMPLETED).
    """
    for state in states:
        if state.is_active:
            return state
    known = [s for s in states if s is not JobState.UNKNOWN]
    return known[-1] if known else JobState.UNKNOWN
