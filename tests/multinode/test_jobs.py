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

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.jobs.helpers import DEMO, events, larsctl, status, step, wait_for, write_profile

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
NODES = ("n1", "n2", "n3")
# One rank per node, 8 images of 16 px each: effective batch 24.
SMALL = ["--recipe", DEMO, "--target-batch", "24", "--per-gpu-batch", "8", "--gpus", "3",
         "--set", "image_size=16", "--set", "log_every_steps=1"]


@pytest.fixture
def profile(virtual_cluster, vc_env, larsctl_dirs, tmp_path, vc):
    """A factory: a user profile for the virtual cluster (its nodes reach each other over eth0)."""

    def make(name: str, **fields) -> str:
        write_profile(larsctl_dirs["config"], name, **{
            "scheduler": "slurm", "nodes": 3, "gpus_per_node": 1, "cpus_per_node": virtual_cluster.cpus_per_node,
            "partition": vc.PARTITION, "walltime": "00:30:00", "signal_margin": 60, "network_interface": "eth0",
            "venv": str(REPO / ".venv"), "workdir": str(tmp_path / "runs"), **fields})
        return name

    return make


def rank_lines(job_dir: str) -> dict[int, str]:
    """rank -> that rank's own log (logs/ranks/rank.R.log)."""
    return {int(p.name.split(".")[1]): p.read_text() for p in Path(job_dir, "logs", "ranks").glob("rank.*.log")}


def assert_trained_across_nodes(job_id: str, row: dict) -> dict[int, str]:
    """Distinct hosts, equal final weights, loss fell, outputs in the shared job dir; rank -> host."""
    logs = rank_lines(row["job_dir"])
    assert sorted(logs) == [0, 1, 2], sorted(logs)
    hosts = {}
    for rank, text in logs.items():
        hosts[rank] = re.findall(rf"trainer: rank {rank} of 3 on (\S+),", text)[-1]
    assert sorted(hosts.values()) == list(NODES), hosts
    digests = {rank: re.findall(r"final parameters sha256 (\w+)", text)[-1] for rank, text in logs.items()}
    assert len(set(digests.values())) == 1, digests  # the allreduce kept every rank's weights equal
    losses = [json.loads(line)["loss"] for line in Path(row["job_dir"], "metrics.jsonl").read_text().splitlines()
              if '"kind": "train"' in line]
    assert min(losses[-3:]) < max(losses[:3]), losses
    assert list(Path(row["job_dir"], "checkpoints").glob("checkpoint-*.pt"))
    on_n2 = next(rank for rank, host in hosts.items() if host == "n2")
    shown = larsctl("logs", job_id, "--rank", str(on_n2)).stdout
    assert f"trainer: rank {on_n2} of 3 on n2," in shown
    return hosts


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


def test_cancel_leaves_no_trainer_on_any_node(virtual_cluster, profile):
    """horovodrun starts the other nodes' ranks over ssh, outside Slurm's process tracking."""
    cluster = profile("vc-cancel", mpi="gloo")
    job_id = larsctl("submit", "--cluster", cluster, *SMALL, "--max-steps", "400").stdout.strip()
    wait_for(job_id, lambda r: r["state"] == "RUNNING" and step(r) >= 2, timeout=300, what="training")
    assert larsctl("cancel", job_id, timeout=180).stdout.strip() == f"{job_id}: CANCELLED"
    deadline = time.monotonic() + 60
    while True:
        left = {n: virtual_cluster.run(n, "pgrep", "-af", "-m trainer", check=False).stdout.strip()
                for n in NODES}
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
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
