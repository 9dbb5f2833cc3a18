"""larsctl jobs across the 3-node test cluster: the real trainer under every launcher.

Each job runs the demo recipe, small (3 ranks x 8 images of 16 px, one rank per
node), through ``larsctl submit`` with a profile for the virtual cluster.  What a
user relies on: the ranks ran on distinct nodes, their gradient allreduce spanned
the nodes (every rank ends with the same weights, and the loss fell), checkpoints,
metrics and every rank's log landed in the shared job directory, USR2 before the
time limit stops all ranks on all nodes at the same step and the job requeues and
completes, and nothing is left running on any node after a cancel.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.jobs.helpers import events, larsctl, step, wait_for
from tests.multinode.helpers import SMALL, assert_trained_across_nodes, rank_lines, trainers_on, wait_no_trainers

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]


def requeue_after_usr2(virtual_cluster, job_id: str) -> dict:
    """USR2 to the batch shell (what --signal=B:USR2@margin does), then the requeued run."""
    row = wait_for(job_id, lambda r: r["state"] == "RUNNING" and step(r) >= 3, timeout=300, what="training")
    (sid,) = row["scheduler_ids"]
    virtual_cluster.client("scancel", "--signal=USR2", "--batch", sid)

    def done(r):
        if r["state"] == "PENDING" and r["restarts"] > 0:  # Slurm holds a requeued job back a while
            time.sleep(6)
            virtual_cluster.client("scontrol", "update", f"JobId={sid}", "StartTime=now", check=False)
        return r["state"] == "COMPLETED"

    return wait_for(job_id, done, timeout=400, what="COMPLETED after a requeue")


def assert_stopped_together(row: dict) -> None:
    logs = rank_lines(row["job_dir"])
    stops = {rank: re.findall(r"rank \d+ stops at step (\d+)", text) for rank, text in logs.items()}
    assert all(len(s) == 1 for s in stops.values()) and len({s[0] for s in stops.values()}) == 1, stops
    (preempted,) = events(row["job_dir"], "preempted")
    assert int(next(iter(stops.values()))[0]) == preempted["step"] == events(row["job_dir"], "resume")[0]["step"]


@pytest.mark.parametrize("mpi, engine", [("openmpi", "horovod"), ("srun-pmix", "horovod"), ("gloo", "horovod"),
                                         ("srun", "ddp")], ids=["mpirun", "srun-pmix", "horovodrun", "torchrun"])
def test_across_nodes_usr2_stops_every_rank_at_one_step_then_the_job_completes(
        virtual_cluster, profile, mpi, engine):
    cluster = profile(f"vc-{mpi}", mpi=mpi, engine=engine)
    job_id = larsctl("submit", "--cluster", cluster, *SMALL, "--max-steps", "30").stdout.strip()
    row = requeue_after_usr2(virtual_cluster, job_id)
    assert row["restarts"] == 1 and row["progress"]["step"] == 30
    assert_stopped_together(row)
    assert_trained_across_nodes(job_id, row)


def test_the_leftover_check_sees_a_trainer_left_on_a_node(virtual_cluster):
    """The check below is real: a process that looks like a rank, left on n2, is found."""
    left = virtual_cluster.popen("n2", ["python3", "-c", "import time; time.sleep(120)", "-m", "trainer",
                                        "--config", "x"])
    try:
        deadline = time.monotonic() + 30
        while "-m trainer --config x" not in trainers_on(virtual_cluster)["n2"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "-m trainer --config x" in trainers_on(virtual_cluster)["n2"]
        assert wait_no_trainers(virtual_cluster, timeout=1)["n2"]
    finally:  # nsenter runs it as a child in the node's PID namespace: end it there
        virtual_cluster.run("n2", "pkill", "-KILL", "-f", "time.sleep.120. -m trainer", check=False)
        left.wait(timeout=30)
    assert not trainers_on(virtual_cluster)["n2"]


def test_cancel_leaves_no_trainer_on_any_node(virtual_cluster, profile):
    """horovodrun starts the other nodes' ranks over ssh, outside Slurm's process tracking."""
    cluster = profile("vc-cancel", mpi="gloo")
    job_id = larsctl("submit", "--cluster", cluster, *SMALL, "--max-steps", "400").stdout.strip()
    wait_for(job_id, lambda r: r["state"] == "RUNNING" and step(r) >= 2, timeout=300, what="training")
    assert larsctl("cancel", job_id, timeout=180).stdout.strip() == f"{job_id}: CANCELLED"
    left = wait_no_trainers(virtual_cluster)
    assert not any(left.values()), left


def test_a_chain_of_two_segments_continues_across_nodes(virtual_cluster, profile):
    cluster = profile("vc-chain", mpi="openmpi")
    job_id = larsctl("submit", "--cluster", cluster, *SMALL, "--max-steps", "30", "--chain", "2",
                     "--max-restarts", "0").stdout.strip()
    row = wait_for(job_id, lambda r: r["state"] == "RUNNING" and step(r) >= 3, timeout=300, what="training")
    first, second = row["scheduler_ids"]
    virtual_cluster.client("scancel", "--signal=USR2", "--batch", first)  # segment 1 ends at its walltime
    done = wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=400, what="COMPLETED in segment 2")
    resume = events(done["job_dir"], "resume")
    assert len(resume) == 1 and resume[0]["step"] == events(done["job_dir"], "preempted")[0]["step"] > 0
    assert done["restarts"] == 0 and done["progress"]["step"] == 30
    assert_trained_across_nodes(job_id, done)


def test_pbs_script_runs_across_the_hosts_of_its_nodefile(virtual_cluster, profile, monkeypatch):
    """PBS (no server here): the Torque wrappers on the virtual cluster plus the pbs_mom-like shim
    of tests/slurm/pbs_over_slurm give the script a $PBS_NODEFILE of three hosts."""
    monkeypatch.setenv("PATH", f"{REPO / 'tests' / 'slurm' / 'pbs_over_slurm'}{os.pathsep}{os.environ['PATH']}")
    cluster = profile("vc-pbs", scheduler="pbs", mpi="gloo")
    job_id = larsctl("submit", "--cluster", cluster, *SMALL, "--max-steps", "12").stdout.strip()
    row = wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=400, what="COMPLETED")
    assert_trained_across_nodes(job_id, row)
