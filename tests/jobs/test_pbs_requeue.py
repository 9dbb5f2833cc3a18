"""A PBS job that requeues itself stays one job: status, follow, logs, cancel and resume
see the resubmitted scheduler id.

PBS has no in-place requeue: on exit 75 the script submits itself again (qsub -W
depend=afterany:$PBS_JOBID) and records ``next=<id>`` in the job's restarts file.
There is no PBS server here, so these run on the test Slurm through its Torque
wrappers (real qsub/qstat/qdel calls), with one test-only addition:
pbs_over_slurm/qsub gives the job what pbs_mom would ($PBS_JOBID, $PBS_NODEFILE).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "tests" / "slurm" / "pbs_over_slurm"


@pytest.fixture
def pbs_profile(slurm_cluster, larsctl_dirs, jobs, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")
    jobs.write_profile(larsctl_dirs["config"], "testpbs", scheduler="pbs", partition="debug",
                       cpus_per_node=4, mpi="gloo", engine="horovod", walltime="00:20:00",
                       signal_margin=60, venv=str(REPO / ".venv"), workdir=str(tmp_path / "runs"))
    return "testpbs"


def _usr2_to_batch_shell(slurm_cluster, sid: str) -> None:
    # What the PBS script's own walltime timer does: USR2 to the batch shell.
    slurm_cluster.run("scancel", "--signal=USR2", "--batch", sid)


def test_a_resubmitted_pbs_job_is_followed_to_its_end(slurm_cluster, pbs_profile, jobs):
    job_id = jobs.larsctl("submit", "--cluster", pbs_profile, *jobs.SHORT, "--max-steps", "40",
                          "--max-restarts", "1").stdout.strip()
    row = jobs.wait_for(job_id, lambda r: r["state"] == "RUNNING" and jobs.step(r) >= 3, what="training")
    (first,) = row["scheduler_ids"]
    _usr2_to_batch_shell(slurm_cluster, first)
    # The first PBS job ends (exit 0 after resubmitting); the job goes on under the new id.
    follow = jobs.larsctl("status", "--watch", job_id, timeout=400, check=False)
    assert follow.returncode == 0, follow.stderr[-3000:]
    done = jobs.status(job_id)
    assert done["state"] == "COMPLETED" and done["restarts"] == 1
    assert len(done["scheduler_ids"]) == 2 and done["scheduler_ids"][0] == first
    assert done["progress"]["step"] == 40
    assert jobs.events(done["job_dir"], "resume")[0]["step"] > 0
    logs = jobs.larsctl("logs", job_id).stdout
    assert f"resubmitted as {done['scheduler_ids'][1]}" in logs and "resumed from" in logs


def test_cancel_reaches_the_resubmitted_pbs_job(slurm_cluster, pbs_profile, jobs):
    job_id = jobs.larsctl("submit", "--cluster", pbs_profile, *jobs.SHORT, "--max-steps", "400",
                          "--max-restarts", "2").stdout.strip()
    row = jobs.wait_for(job_id, lambda r: r["state"] == "RUNNING" and jobs.step(r) >= 3, what="training")
    _usr2_to_batch_shell(slurm_cluster, row["scheduler_ids"][0])
    again = jobs.wait_for(job_id, lambda r: len(r["scheduler_ids"]) == 2 and r["state"] == "RUNNING"
                          and r["progress"]["resumes"] == 1, timeout=300, what="running again under its new id")
    assert jobs.larsctl("cancel", job_id).stdout.strip() == f"{job_id}: CANCELLED"
    second = again["scheduler_ids"][1]
    deadline = time.monotonic() + 60
    while slurm_cluster.job_field(second, "JobState") == "COMPLETING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm_cluster.job_field(second, "JobState") == "CANCELLED"
    assert jobs.larsctl("cancel", job_id).stdout.strip() == f"{job_id}: already CANCELLED"
