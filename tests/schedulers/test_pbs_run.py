"""The generated PBS script, run by bash under a PBS-like environment.

No PBS server exists in Debian or on PyPI, so the tests set up what pbs_mom would
($PBS_JOBID, $PBS_NODEFILE, $PBS_O_WORKDIR) and run the script with the real
mpirun / horovodrun and the fake trainer (fake_trainer/).  The one stub is `qsub`
for the requeue path: a recording script on PATH that prints a new job id, because
nothing could accept the resubmission.  The client side (qsub/qstat/qdel) is tested
for real in tests/slurm/test_torque_client.py.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from larsctl.schedulers import get_scheduler
from larsctl.facts.jobdir import JobPaths

pytestmark = pytest.mark.slow

QSUB_STUB = """#!/bin/bash
# Recording stub (no PBS server): remember the arguments, print a job id.
printf '%s\\n' "$@" > "$QSUB_RECORD"
echo 78.pbs-server
"""


def _prepare(support, tmp_path, *, mpi="gloo", walltime="01:00:00", margin=60, max_restarts=1):
    profile = support.local_profile(scheduler="pbs", mpi=mpi, walltime=walltime, signal_margin=margin)
    spec = support.make_spec(profile)
    d = support.job_dir(tmp_path, "pbs job")
    request = get_scheduler("pbs").dryrun(spec, d, job_id="j1", max_restarts=max_restarts)
    request.script_path.write_text(request.script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qsub").write_text(QSUB_STUB)
    (bin_dir / "qsub").chmod(0o755)
    nodefile = tmp_path / "nodefile"
    nodefile.write_text(f"{socket.gethostname()}\n" * spec.plan.gpus_per_node)
    env = support.fake_env(PBS_JOBID="77.pbs-server", PBS_NODEFILE=nodefile, PBS_O_WORKDIR=tmp_path,
                           QSUB_RECORD=tmp_path / "qsub-args", PATH=f"{bin_dir}:{os.environ['PATH']}")
    return request, d, env


def _run(request, env, cwd, timeout=120):
    return subprocess.run(["bash", str(request.script_path)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _log(d: Path) -> str:
    return "".join(p.read_text() for p in sorted((d / "logs").glob("*")))


@pytest.mark.parametrize("mpi", ["gloo", "openmpi"])
def test_walltime_timer_sends_usr2_and_the_script_resubmits_itself(support, tmp_path, mpi):
    # USR2 10 s in: horovodrun and mpirun have started their ranks by then, even on a loaded machine.
    request, d, env = _prepare(support, tmp_path, mpi=mpi, walltime="00:00:15", margin=5)
    env["FAKE_SECONDS"] = "60"  # would outlive the walltime without the timer
    start = time.monotonic()
    r = _run(request, env, tmp_path)
    assert r.returncode == 0, _log(d)[-3000:]
    assert time.monotonic() - start < 40
    notes = support.rank_notes(d)
    assert sorted(notes) == ["rank0", "rank1"]
    assert all("signal SIGUSR2" in lines for lines in notes.values()), notes
    args = (tmp_path / "qsub-args").read_text().splitlines()
    assert args == ["-W", "depend=afterany:77.pbs-server", "-v", "LARSCTL_RESTARTS=1", str(request.script_path)]
    [row] = JobPaths(d).restart_records()
    assert row["scheduler_id"] == "77.pbs-server" and row["next"] == "78.pbs-server"
    assert row["restart"] == "1" and row["signal"] == "USR2"


def test_finished_run_neither_resubmits_nor_leaves_the_timer(support, tmp_path):
    request, d, env = _prepare(support, tmp_path, mpi="openmpi", walltime="00:59:00", margin=60)
    r = _run(request, env, tmp_path)
    assert r.returncode == 0, _log(d)[-3000:]
    assert not (tmp_path / "qsub-args").exists() and JobPaths(d).restart_records() == []
    assert all(lines[-1] == "done" for lines in support.rank_notes(d).values())
    sleepers = subprocess.run(["pgrep", "-f", "^sleep 3480$"], capture_output=True, text=True).stdout
    assert sleepers == ""  # the background timer was killed with its sleep


def test_no_restarts_left_propagates_the_requeue_code(support, tmp_path):
    request, d, env = _prepare(support, tmp_path, mpi="openmpi", max_restarts=1)
    env.update(FAKE_MODE="requeue-once", LARSCTL_RESTARTS="0")
    assert _run(request, env, tmp_path).returncode == 0  # first run: resubmitted
    env["LARSCTL_RESTARTS"] = "1"
    env["FAKE_MODE"] = "fail"
    assert _run(request, env, tmp_path).returncode == 3  # a real failure is the job's exit code
    (tmp_path / "qsub-args").unlink()
    env.update(FAKE_MODE="requeue-once", LARSCTL_RESTARTS="0")
    request2, d2, env2 = _prepare(support, tmp_path / "second", mpi="openmpi", max_restarts=0)
    env2.update(FAKE_MODE="requeue-once")
    r = _run(request2, env2, tmp_path)
    assert r.returncode == 75 and "no restarts left" in _log(d2)
    assert not (tmp_path / "second" / "qsub-args").exists()


def test_term_checkpoints_but_does_not_resubmit(support, tmp_path):
    """qdel sends TERM: the script passes TERM on, the trainer checkpoints and the job ends there."""
    request, d, env = _prepare(support, tmp_path, mpi="gloo")
    env["FAKE_SECONDS"] = "60"
    proc = subprocess.Popen(["bash", str(request.script_path)], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while len(support.rank_notes(d)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert all("signal SIGTERM" in lines for lines in support.rank_notes(d).values())
    assert not (tmp_path / "qsub-args").exists() and JobPaths(d).restart_records() == []
