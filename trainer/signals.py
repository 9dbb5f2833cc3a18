"""Preemption: SIGUSR2/SIGTERM set a flag; the loop stops at a step boundary.

The handler only records the signal (nothing else is safe inside a handler).  At
each optimizer-step boundary every rank sums the flags of all ranks
(`StopFlag.agreed`), so a signal that reached only some ranks still stops all of
them after the SAME step; rank 0 then checkpoints and all exit with REQUEUE (75).
Slurm jobs should send USR2: NCCL claims USR1.
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


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

    def agreed(self, engine) -> bool:
        """True on every rank when any rank got a stop signal (a tiny allreduce)."""
        import torch  # not at import time: __main__ installs the flag before torch loads

        local = torch.tensor([1.0 if self.raised else 0.0])
        return bool(engine.allreduce_sum(local).item() > 0)
