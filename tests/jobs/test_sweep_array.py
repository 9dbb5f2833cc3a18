"""A sweep on Slurm is one job array, on the real test Slurm with the real trainer: task i runs the
job on line i+1 of the array's tasks file with that job's own script, so each task is an ordinary
job (status, logs, requeue).  One task is preempted as Slurm does it (USR2 to its batch shell): it
checkpoints, requeues that task alone, and resumes from its checkpoint; the other runs on.

PBS's -J arrays have no real server to run on here (none in Debian or on PyPI; the PBS-over-Slurm
shim of tests/slurm has no arrays): their scripts are golden text and shellcheck only
(tests/schedulers/test_render.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_a_sweep_is_one_job_array_and_its_preempted_task_resumes(slurm_cluster, slurm_profile, jobs, larsctl_dirs,
                                                                  tmp_path):
    cluster = slurm_profile("testslurmarray", engine="ddp", mpi="gloo")
    args = ["sweep", "--cluster", cluster, "--recipe", str(REPO / "jobs" / "digits-sweep.yaml"), "--batches", "16,32",
            "--gpus", "1", "--optimizers", "sgd", "--lrs", "0.05", "--target", "val/accuracy>=0.99",
            "--eval-examples", "100000", "--max-steps", "600", "--max-concurrent", "2"]
    dry = jobs.larsctl(*args, "--dry-run").stdout
    assert "#SBATCH --array=0-1%2" in dry and "2 jobs, at most 2 at once" in dry
    assert not (tmp_path / "runs").exists()

    r = jobs.larsctl(*args)
    sweep_id = r.stdout.strip()
    sweep = json.loads((tmp_path / "runs" / "sweeps" / sweep_id / "sweep.json").read_text())
    (array,) = sweep["arrays"]
    assert f"2 jobs submitted as job array {array['scheduler_id']}" in r.stderr
    assert sweep["state"] == "submitted"
    rows = {row["id"]: row for row in json.loads(jobs.larsctl("jobs", "--sweep", sweep_id, "--json").stdout)}
    tasks = [rows[job_id]["scheduler_ids"] for job_id in array["jobs"]]
    assert tasks == [[f"{array['scheduler_id']}_0"], [f"{array['scheduler_id']}_1"]]
    first, second = array["jobs"]

    # Task 0 is preempted as Slurm does it at walltime minus the margin: USR2 to its batch shell.
    jobs.wait_for(first, lambda row: row["state"] == "RUNNING" and jobs.step(row) >= 3, what="task 0 training")
    task = tasks[0][0]
    slurm_cluster.run("scancel", "--signal=USR2", "--batch", task)

    jobs.wait_for(first, lambda row: row["state"] == "PENDING" and row["restarts"] > 0, timeout=300,
                  what="task 0 requeued")
    # While it waits, the controller away: the report says so (not swallowed) and goes on from the
    # last known states.
    slurm_cluster.stop_controller()
    try:
        r = jobs.larsctl("sweep", "report", sweep_id, "--json", timeout=180)
    finally:
        slurm_cluster.start_controller()
    assert "scheduler not answering since" in r.stderr and "showing the last known state" in r.stderr, r.stderr
    assert sorted(b["effective_batch"] for b in json.loads(r.stdout)["optimizers"][0]["batches"]) == [16, 32]
    slurm_cluster.release_requeued(task)
    done = jobs.wait_for(first, lambda row: row["state"] == "COMPLETED", timeout=300,
                         what="task 0 COMPLETED after its requeue")
    other = jobs.wait_for(second, lambda row: row["state"] == "COMPLETED", timeout=300, what="task 1 COMPLETED")
    assert done["restarts"] == 1 and other["restarts"] == 0  # the requeue took that task only
    assert done["scheduler_ids"] == [task]  # a requeued array task keeps its id
    assert [s["cause"] for s in done["segments"]] == ["preempted", "completed"]
    assert jobs.events(done["job_dir"], "resume")[0]["step"] > 0 and done["progress"]["step"] == 600
    assert other["progress"]["step"] == 600
    assert "trainer: step=" in jobs.larsctl("logs", first).stdout  # the task's output is in its job's logs/

    shown = jobs.larsctl("status", "--sweep", sweep_id).stdout.splitlines()
    assert shown[0].split()[:3] == ["POINT", "TASK", "JOB"]
    assert [line.split()[:3] for line in shown[1:]] == [["b16-sgd-lr0.05-s1", tasks[0][0], first],
                                                         ["b32-sgd-lr0.05-s1", tasks[1][0], second]]

