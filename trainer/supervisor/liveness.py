"""Whether nodes answer, asked the scheduler's own way (srun into the allocation, ssh), bounded.

Silent heartbeats alone do not tell a dead node from a step that a launcher tore down (Slurm
kills every process of a step, the heartbeat side processes included, when one rank fails).
Before a segment is called ``node_fail``, the silent hosts are asked: one that answers is alive.
The batch script passes the scheduler's probe as a shell command taking the host as ``$1``.
"""
from __future__ import annotations

import subprocess
import time

PROBE_TIMEOUT_S = 20.0
# A dead node does not refuse: its probe runs to the timeout, which the job's bound pays for.
PROBE_SHARE = 6  # of the bound


def probe_timeout(bound_s: float) -> float:
    """Seconds a probe gets within a fault bound: a sixth of it, 5 to PROBE_TIMEOUT_S (a live
    node answers srun or ssh in a second or two)."""
    return min(PROBE_TIMEOUT_S, max(5.0, bound_s / PROBE_SHARE))


def answering(hosts, probe: str | None, timeout: float = PROBE_TIMEOUT_S) -> set[str] | None:
    """The hosts among ``hosts`` that answer ``probe`` within ``timeout`` (all asked at once);
    None when there is no probe (nothing can be told)."""
    if not probe:
        return None
    procs = {host: subprocess.Popen(["bash", "-c", probe, "probe", host], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for host in sorted(set(hosts))}
    deadline = time.monotonic() + timeout
    alive = set()
    for host, proc in procs.items():
        try:
            if proc.wait(timeout=max(0.1, deadline - time.monotonic())) == 0:
                alive.add(host)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return alive
