"""Preemption: SIGUSR2/SIGTERM set a flag; the loop stops at a step boundary.

The handler only records the signal (nothing else is safe inside a handler).
Every rank sums the flags of all ranks at the same optimizer steps (`StopFlag.agreed`):
the first step of a run, every STOP_CHECK_EVERY_STEPS-th step, each logging step (where
the flag rides along in the metrics allreduce) and each epoch end.  Checking every step
would make every GPU step wait for the host; checking at steps every rank picks alike
keeps the guarantee: a signal that reached only some ranks still stops all of them after
the SAME step; rank 0 then checkpoints and all exit with REQUEUE (75).  The stop comes at
most STOP_CHECK_EVERY_STEPS steps after the signal, well inside any signal margin.
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

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    @property
    def raised(self) -> bool:
        return self.signum is not None

    def local(self, device=None):
        """This rank's flag as a one-element tensor (to sum over ranks)."""
        import torch  # not at import time: __main__ installs the flag before torch loads

        return torch.tensor([1.0 if self.raised else 0.0], device=device)

    def agreed(self, engine) -> bool:
        """True on every rank when any rank got a stop signal (a tiny allreduce)."""
        return bool(engine.allreduce_sum(self.local()).item() > 0)
