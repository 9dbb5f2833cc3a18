"""Preemption: SIGUSR2/SIGTERM set a flag; the loop stops at a step boundary.

The handler only records the signal (nothing else is safe inside a handler).
Every rank sums the flags of all ranks at the same optimizer steps (`StopFlag.agreed`):
the first step of a run, every STOP_CHECK_EVERY_STEPS-th step, each logging step (where
the flag rides along in the metrics allreduce) and each epoch end.  Checking every step
would make every GPU step wait for the host; checking at steps every rank picks alike
keeps the guarantee: a signal that reached only some ranks still stops all of them after
the SAME step; rank 0 then checkpoints and all exit.  The stop comes at most
STOP_CHECK_EVERY_STEPS steps after the signal, well inside any signal margin.

Two kinds of stop: USR2 (the time limit is near, or a preemption: requeue, exit 75) and
TERM (cancelled, or the node shuts down: nothing requeues, exit 143).  The flags of both
are summed over ranks, so when any rank got TERM, every rank stops as cancelled.
Slurm jobs should send USR2: NCCL claims USR1.
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
STOP_CHECK_EVERY_STEPS = 10


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopFlag":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def raised(self) -> bool:
        return self.signum is not None

    @property
    def cancelled(self) -> bool:
        return self.signum == signal.SIGTERM

    def _handle(self, signum, frame) -> None:
        if self.signum != signal.SIGTERM:  # TERM (cancel) wins over an earlier USR2
            self.signum = signum

    def local(self, device=None):
        """This rank's flags as a two-element tensor [stop, cancel] (to sum over ranks)."""
        import torch  # not at import time: __main__ installs the flag before torch loads

        return torch.tensor([1.0 if self.raised else 0.0, 1.0 if self.cancelled else 0.0], device=device)

    def agreed(self, engine) -> str | None:
        """What every rank does, from all ranks' flags (a tiny allreduce): None (go on),
        PREEMPT or CANCEL."""
        return verdict(engine.allreduce_sum(self.local()).tolist())


PREEMPT, CANCEL = "preempt", "cancel"
WIDTH = 2  # elements of StopFlag.local()


def verdict(totals) -> str | None:
    """The summed [stop, cancel] flags -> None, PREEMPT or CANCEL."""
    stops, cancels = totals[0], totals[1]
    return CANCEL if cancels > 0 else PREEMPT if stops > 0 else None
