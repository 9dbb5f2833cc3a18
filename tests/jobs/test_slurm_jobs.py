"""larsctl submit/status/logs/cancel/resume against the real test Slurm, with the real trainer.

The `slurm_cluster` fixture (tests/slurm) starts a single-node Slurm from
Debian's packages; a user profile in $LARSCTL_CONFIG_DIR points larsctl at it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _release_when_requeued(slurm_cluster, sid):
    def check(row):
        if row["state"] == "PENDING" and row["restarts"] > 0:
            slurm_cluster.release_requeued(sid)
        return row["state"] == "COMPLETED"
    return check


def test_horovod_srun_pmix_job_completes_and_usr2_requeues_once(slurm_cluster, slurm_profile, jobs):
    if not cluster_has_pmix():
        pytest.skip("Slurm's PMIx plugin is not installed")
    cluster = slurm_profile()
    job_id = jobs.larsctl("submit", "--cluster", cluster, *jobs.SHORT, "--max-steps", "30").stdout.strip()
    row = jobs.wait_for(job_id, lambda r: r["state"] == "RUNNING" and jobs.step(r) >= 3,
                        what="RUNNING with progress")
    assert set(row["seen_states"]) <= {"PENDING", "RUNNING"}
    (sid,) = row["scheduler_ids"]
    # What Slurm does at walltime minus the margin (--signal=B:USR2@30): USR2 to the batch shell.
    slurm_cluster.run("scancel", "--signal=USR2", "--batch", sid)
    done = jobs.wait_for(job_id, _release_when_requeued(slurm_cluster, sid), timeout=300,
                         what="COMPLETED after a requeue")
    assert done["restarts"] == 1
    assert done["progress"]["step"] == 30 and done["progress"]["val_accuracy"] is not None
    job_dir = done["job_dir"]
    assert jobs.events(job_dir, "preempted") and jobs.events(job_dir, "resume")[0]["step"] > 0
    assert list(Path(job_dir, "checkpoints").glob("*.pt"))
    logs = jobs.larsctl("logs", job_id).stdout
    assert "srun --mpi=pmix" in logs and "trainer: step=" in logs


def test_ddp_cancel_then_resume_continues_from_the_checkpoint(slurm_cluster, slurm_profile, jobs):
    cluster = slurm_profile("testslurmddp", engine="ddp", mpi="gloo")
    job_id = jobs.larsctl("submit", "--cluster", cluster, *jobs.SHORT, "--max-steps", "30",
                          "--set", "checkpoint_every_steps=3").stdout.strip()
    row = jobs.wait_for(job_id, lambda r: jobs.step(r) >= 4, what="progress")
    assert jobs.larsctl("cancel", job_id).stdout.strip().startswith(f"{job_id}: ")
    jobs.wait_for(job_id, lambda r: r["state"] == "CANCELLED", timeout=60, what="CANCELLED")
    assert jobs.larsctl("cancel", job_id).stdout.strip() == f"{job_id}: already CANCELLED"
    jobs.larsctl("resume", job_id)
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=300,
                         what="COMPLETED after resume")
    assert done["progress"]["step"] == 30 and len(done["scheduler_ids"]) == 2
    assert jobs.events(row["job_dir"], "resume")[-1]["step"] >= 3
    assert "torch.distributed.run" in jobs.larsctl("logs", job_id).stdout


def test_chain_resumes_in_the_next_segment_after_the_time_limit(slurm_cluster, slurm_profile, jobs):
    """Walltime 2 min, USR2 1 min before: segment 1 stops there; segment 2 continues from its checkpoint."""
    cluster = slurm_profile("testslurmshort", engine="ddp", mpi="gloo", walltime="00:02:00",
                            signal_margin=60)
    job_id = jobs.larsctl("submit", "--cluster", cluster, *jobs.SHORT, "--max-steps", "400",
                          "--set", "checkpoint_every_steps=5", "--chain", "2",
                          "--max-restarts", "0").stdout.strip()

    def resumed_and_training(row):
        resumes = jobs.events(row["job_dir"], "resume")
        return bool(resumes) and jobs.step(row) > resumes[0]["step"]

    row = jobs.wait_for(job_id, resumed_and_training, timeout=400, what="training again in segment 2")
    assert row["state"] == "RUNNING" and len(row["scheduler_ids"]) == 2
    assert jobs.events(row["job_dir"], "resume")[0]["step"] > 0  # from the stop checkpoint
    jobs.larsctl("cancel", job_id)


def test_a_preempted_job_ends_for_watch_follow_logs_and_cancel_and_can_be_resumed(
        slurm_cluster, slurm_profile, jobs):
    """Slurm PreemptMode=CANCEL: a job of the urgent partition takes the node; ours ends PREEMPTED."""
    cluster = slurm_profile("testslurmpreempt", engine="ddp", mpi="gloo")
    job_id = jobs.larsctl("submit", "--cluster", cluster, *jobs.SHORT, "--max-steps", "400").stdout.strip()
    jobs.wait_for(job_id, lambda r: r["state"] == "RUNNING", what="RUNNING")
    urgent = slurm_cluster.run("sbatch", "--parsable", "--partition", "urgent", "--ntasks", "1",
                               "--cpus-per-task", "4", "--output", "/dev/null", "--wrap", "sleep 1").stdout.strip()
    row = jobs.wait_for(job_id, lambda r: r["state"] == "PREEMPTED", timeout=90, what="PREEMPTED")
    # Each of these would poll forever if PREEMPTED were not a final state.
    watch = jobs.larsctl("status", "--watch", job_id, check=False, timeout=60)
    assert watch.returncode == 1 and "PREEMPTED" in watch.stderr
    jobs.larsctl("logs", "--follow", job_id, timeout=60)
    assert jobs.larsctl("cancel", job_id).stdout.strip() == f"{job_id}: already PREEMPTED"
    slurm_cluster.run("scontrol", "wait_job", urgent, timeout=60, check=False)
    jobs.larsctl("resume", job_id)
    resumed = jobs.wait_for(job_id, lambda r: r["state"] in ("PENDING", "RUNNING"), what="resumed")
    assert len(resumed["scheduler_ids"]) == 2 and row["scheduler_ids"][0] == resumed["scheduler_ids"][0]
    jobs.larsctl("cancel", job_id)


def test_sbatch_failure_shows_its_stderr_and_leaves_nothing(slurm_cluster, slurm_profile, jobs, tmp_path):
    cluster = slurm_profile("badpartition", partition="nosuch")
    r = jobs.larsctl("submit", "--cluster", cluster, *jobs.SHORT, check=False)
    assert r.returncode == 1
    line = r.stderr.strip()
    assert line.startswith("Error: submitting job.sbatch failed: sbatch failed (exit 1): ")
    assert "invalid partition specified: nosuch; " in line and "\n" not in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert json.loads(jobs.larsctl("jobs", "--json").stdout) == []


def cluster_has_pmix() -> bool:
    return any(Path("/usr/lib/x86_64-linux-gnu/slurm-wlm").glob("mpi_pmix*.so"))


def test_status_and_watch_go_on_while_the_controller_is_away(slurm_cluster, slurm_profile, jobs):
    """slurmctld stopped mid-run: status answers within its timeout with the last known state and
    since when the scheduler has not answered; nothing is marked failed; --watch keeps going and
    ends when the job does, after the controller is back."""
    import re
    import subprocess
    import time

    cluster = slurm_profile("testslurmctld", engine="ddp", mpi="gloo")
    job_id = jobs.larsctl("submit", "--cluster", cluster, *jobs.SHORT, "--max-steps", "60").stdout.strip()
    jobs.wait_for(job_id, lambda r: r["state"] == "RUNNING" and jobs.step(r) >= 3, what="RUNNING")
    watch = subprocess.Popen([*jobs.LARSCTL, "status", "--watch", job_id], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    slurm_cluster.stop_controller()
    try:
        sinces = []
        for _ in range(2):
            started = time.monotonic()
            r = jobs.larsctl("status", job_id, "--json", check=False, timeout=120)
            assert time.monotonic() - started < 60  # squeue's timeout (30 s), not a hang
            assert r.returncode == 1, r.stderr
            m = re.fullmatch(r"Warning: slurm scheduler not answering since (\d\d:\d\d): .*; showing the last "
                             r"known state", r.stderr.strip())
            assert m, r.stderr
            sinces.append(m.group(1))
            (row,) = json.loads(r.stdout)
            assert row["state"] == "RUNNING"
        assert sinces[0] == sinces[1]  # since the first failure, not since each call
        assert watch.poll() is None
    finally:
        slurm_cluster.start_controller()
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=300, what="COMPLETED")
    assert done["progress"]["step"] == 60
    assert watch.wait(timeout=180) == 0
    assert "not answering since" in watch.stderr.read()
    assert jobs.larsctl("status", job_id).stderr == ""  # answering again
