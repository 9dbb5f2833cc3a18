"""PbsScheduler's client side (qsub/qstat/qdel) against Debian's slurm-wlm-torque wrappers.

There is no PBS server to test against; Slurm's Torque-compatible commands accept
the same qsub/qstat/qdel calls, so submission, state parsing (the `qstat -f` text
format, after `qstat -x -F json` is refused), dependencies and cancel run for real
on the test Slurm.  The script body itself is tested in tests/schedulers/test_pbs_run.py.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from larsctl.schedulers import BatchRequest, JobState, SchedulerError, get_scheduler

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _request(tmp_path: Path, name: str, body: str, argv=("qsub",)) -> BatchRequest:
    return BatchRequest(script=f"#!/bin/bash\n#PBS -N {name}\n{body}\n", script_path=tmp_path / f"{name}.pbs",
                        submit_argv=list(argv), launch_line=body)


def _wait_terminal(s, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = s.describe([job_id])[job_id]
        if info.state.is_terminal:
            return info
        time.sleep(0.3)
    raise AssertionError(f"{job_id} not finished: {info}")


def test_qsub_qstat_round_trip_with_dependency(slurm_cluster, tmp_path):
    s = get_scheduler("pbs")
    first = s.schedule(_request(tmp_path, "first", "sleep 2"))
    second = s.schedule(_request(tmp_path, "second", "true"), after=first, after_kind="afterany")
    infos = s.describe([first, second, "987654"])
    assert infos[first].state in (JobState.PENDING, JobState.RUNNING)
    assert infos[second].state is JobState.PENDING  # waits on the first
    assert infos["987654"].state is JobState.UNKNOWN
    assert slurm_cluster.job_field(second, "Dependency").startswith(f"afterany:{first}")
    assert _wait_terminal(s, second).state is JobState.COMPLETED
    assert s.describe([first])[first].state is JobState.COMPLETED


def test_qdel_cancels_and_is_idempotent(slurm_cluster, tmp_path):
    s = get_scheduler("pbs")
    job_id = s.schedule(_request(tmp_path, "long", "sleep 120"))
    s.cancel(job_id)
    _wait_terminal(s, job_id, timeout=30)  # Torque shows C for finished and cancelled alike
    assert slurm_cluster.job_field(job_id, "JobState") == "CANCELLED"
    s.cancel(job_id)  # again: qdel fails, the job is finished, no error
    s.cancel("987654")


def test_qsub_failure_carries_its_stderr(slurm_cluster, tmp_path):
    s = get_scheduler("pbs")
    with pytest.raises(SchedulerError, match="qsub failed"):
        s.schedule(_request(tmp_path, "bad", "true", argv=("qsub", "-q", "no-such-queue")))
