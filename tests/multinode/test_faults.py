"""A node killed as a whole in the middle of a 3-node job, under every flavour that runs across
nodes here: the segment ends as node_fail naming the node, no surviving rank is left blocked,
the allocation is released and the job waits for its full size; once the node is back the job
runs again from its newest checkpoint and completes with equal weights on every node.

The kill is the node's namespace init dying (tests/multinode/cluster.py kill_node): every
process on it dies at once and its network goes, as in a power loss.  The job's fault bound
is 30 s, so the watchdog judges a silent node after 15 s, or after two heartbeat periods (7 s)
once the ranks on the other nodes have ended (their connections to the dead node close).  When the node that dies runs the
batch script (n1), nothing of the job is left there to notice: Slurm itself finds the node
dead by its missed pings (SlurmdTimeout 60 s in the test cluster) and requeues the job.
"""
from __future__ import annotations

import time

import pytest

from tests.jobs.helpers import digests, expected_digests, larsctl, step, train_samples, wait_for
from tests.multinode.helpers import NODES, SMALL, assert_trained_across_nodes, wait_no_trainers

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

BOUND = 30
SLURMD_TIMEOUT = 60  # tests/multinode/cluster.py slurm.conf
STEPS, EVERY = 40, 5


def released_until_done(virtual_cluster, vc, sid: str, said: list | None = None):
    """A predicate for wait_for: COMPLETED; a requeued job held back is let go at once (once the
    previous run's credential has expired).  larsctl looks at the waiting job once more first, as
    a --watch would within that time: its node policies (grow-back) see the nodes the run left."""
    def done(row):
        if row["state"] in ("PENDING", "REQUEUED") and row["restarts"] > 0:
            time.sleep(vc.CRED_EXPIRE + 1)
            told = larsctl("status", row["id"], check=False)
            if said is not None:
                said.append((virtual_cluster.client("sinfo", "-h", "-o", "%n %T", check=False).stdout, told.stderr))
            virtual_cluster.client("scontrol", "update", f"JobId={sid}", "StartTime=now", check=False)
        return row["state"] == "COMPLETED"
    return done


# The allocation's release is waited for (and the job seen waiting for its full size) where it is
# the point: once under mpirun, and when the batch host dies (Slurm requeues the job itself).
@pytest.mark.parametrize("mpi, engine, victim, released", [
    ("openmpi", "horovod", "n2", True), ("srun-pmix", "horovod", "n1", True), ("gloo", "horovod", "n3", False),
    ("srun", "ddp", "n2", False),
], ids=["mpirun-n2", "srun-pmix-n1-batch-host", "horovodrun-n3", "torchrun-n2"])
def test_a_killed_node_ends_the_segment_as_node_fail_and_the_job_completes_once_it_is_back(
        virtual_cluster, vc, profile, mpi, engine, victim, released):
    cluster = profile(f"vc-nf-{mpi}", mpi=mpi, engine=engine, faults={"bound_s": BOUND})
    job_id = larsctl("submit", "--cluster", cluster, *SMALL, "--max-steps", str(STEPS),
                     "--set", f"checkpoint_every_steps={EVERY}").stdout.strip()
    row = wait_for(job_id, lambda r: r["state"] == "RUNNING" and step(r) >= 8, timeout=300, what="training")
    (sid,) = row["scheduler_ids"]
    virtual_cluster.kill_node(victim)
    killed = time.monotonic()
    try:
        row = wait_for(job_id, lambda r: any(s["cause"] for s in r["segments"]), timeout=300,
                       what="the segment's end")
        stated = time.monotonic() - killed
        seg = row["segments"][0]
        assert seg["cause"] == "node_fail" and victim in (seg["host"] or ""), seg
        # The watchdog's bound; on the batch host's death, Slurm's own (missed pings, then DOWN).
        assert stated < (BOUND if victim != "n1" else SLURMD_TIMEOUT + 40) + 15, stated
        survivors = [n for n in NODES if n != victim]
        left = wait_no_trainers(virtual_cluster, survivors, timeout=BOUND)
        assert not any(left.values()), f"ranks left on the surviving nodes: {left}"
        if released:
            # The allocation is released (Slurm keeps the job COMPLETING until it has declared the dead
            # node DOWN), then the job waits for its full size with the surviving nodes idle.
            deadline = time.monotonic() + SLURMD_TIMEOUT + 60
            while (queued := virtual_cluster.client("squeue", "-h", "-j", sid, "-o", "%T").stdout.strip()) \
                    != "PENDING" and time.monotonic() < deadline:
                time.sleep(2)
            assert queued == "PENDING", queued
            time.sleep(10)
            assert virtual_cluster.client("squeue", "-h", "-j", sid, "-o", "%T").stdout.strip() == "PENDING"
            assert all(virtual_cluster.node_state(n) == "idle" for n in survivors), \
                {n: virtual_cluster.node_state(n) for n in NODES}
    finally:
        virtual_cluster.start_node(victim)
    done = wait_for(job_id, released_until_done(virtual_cluster, vc, sid), timeout=600,
                    what="COMPLETED once the node is back")
    assert done["progress"]["step"] == STEPS
    first, *rest = done["segments"]
    assert rest[-1]["cause"] == "completed" and first["cause"] == "node_fail"
    assert 0 <= first["steps_lost"] <= EVERY, first
    assert_trained_across_nodes(job_id, done)


def test_a_job_whose_node_stays_away_goes_on_on_the_nodes_left_then_grows_back(virtual_cluster, vc, profile,
                                                                                 larsctl_dirs):
    """faults: shrink_after_s 20, grow_back: n3 is killed and stays away; once the job has waited
    20 s, larsctl (here: its status polls) resumes it on 2 nodes keeping the effective batch 24
    (2 x 12 x 1 instead of 3 x 8 x 1); n3 comes back, the shrunk job is preempted, and its next
    segment runs on 3 nodes again.  Every step covers the samples an uninterrupted run's does."""
    cluster = profile("vc-shrink", mpi="openmpi", engine="horovod",
                      faults={"bound_s": BOUND, "shrink_after_s": 20, "grow_back": True})
    steps = 60
    job_id = larsctl("submit", "--cluster", cluster, *SMALL, "--max-steps", str(steps),
                     "--set", f"checkpoint_every_steps={EVERY}").stdout.strip()
    wait_for(job_id, lambda r: r["state"] == "RUNNING" and step(r) >= 8, timeout=300, what="training")
    virtual_cluster.kill_node("n3")
    try:
        row = wait_for(job_id, lambda r: r["segments"][-1]["shape_text"] == "2x1x12x1" and r["state"] == "RUNNING"
                       and step(r) > (r["segments"][-1]["first_step"] or 10**9), timeout=600,
                       what="training on the 2 nodes left")
        assert row["segments"][0]["cause"] == "node_fail" and row["segments"][0]["host"] == "n3"
    finally:
        virtual_cluster.start_node("n3")
    virtual_cluster.client("scancel", "--signal=USR2", "--batch", row["scheduler_ids"][-1])
    said = []
    done = wait_for(job_id, released_until_done(virtual_cluster, vc, row["scheduler_ids"][-1], said), timeout=600,
                    what="COMPLETED after growing back")
    shapes = [s["shape_text"] for s in done["segments"] if s["last_step"] is not None]
    assert shapes[0] == "3x1x8x1" and "2x1x12x1" in shapes and shapes[-1] == "3x1x8x1", (shapes, said)
    assert done["progress"]["step"] == steps
    assert digests(done["job_dir"]) == expected_digests(steps, 24, train_samples(larsctl_dirs, 16))
