"""The local executor end to end: real `larsctl` processes, the real trainer, real launchers."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_follow_completes_with_progress_logs_and_checkpoint(jobs, larsctl_dirs):
    r = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--max-steps", "6", "--follow",
                     timeout=300)
    job_id = r.stdout.splitlines()[0]
    assert "final validation accuracy 0." in r.stdout
    row = jobs.status(job_id)
    assert row["state"] == "COMPLETED"
    assert row["progress"]["step"] == row["progress"]["total_steps"] == 6
    assert 0.0 <= row["progress"]["val_accuracy"] <= 1.0
    assert row["progress"]["images_per_sec"] > 0
    job_dir = Path(row["job_dir"])
    assert job_dir.parent == larsctl_dirs["home"] / "runs"  # the local profile's workdir
    assert list((job_dir / "checkpoints").glob("*.pt"))
    assert list((job_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert "trainer:" in jobs.larsctl("logs", job_id).stdout
    # Each rank's own log file, without the console's rank prefix.
    rank0 = jobs.larsctl("logs", job_id, "--rank", "0").stdout
    assert "trainer: step=" in rank0 and "[0]<" not in rank0
    rank1 = jobs.larsctl("logs", job_id, "--rank", "1").stdout
    assert rank1.startswith("trainer: rank 1 of 2 on ") and "trainer: step=" not in rank1
    assert sorted(p.name for p in (job_dir / "logs" / "ranks").iterdir()) == ["rank.0.log", "rank.1.log"]

    # The job directory alone rebuilds a lost database.
    (larsctl_dirs["home"] / "jobs.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (larsctl_dirs["home"] / f"jobs.sqlite{extra}").unlink(missing_ok=True)
    assert json.loads(jobs.larsctl("jobs", "--json").stdout) == []
    jobs.larsctl("jobs", "--rebuild", str(job_dir))
    rebuilt = jobs.status(job_id)
    assert rebuilt["state"] == "COMPLETED"
    assert rebuilt["scheduler_ids"] == row["scheduler_ids"]


def test_cancel_then_resume_continues_from_the_checkpoint(jobs):
    job_id = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--max-steps", "40",
                          "--set", "checkpoint_every_steps=3").stdout.strip()
    row = jobs.wait_for(job_id, lambda r: r["state"] == "RUNNING" and jobs.step(r) >= 4,
                        what="running with progress")
    assert set(row["seen_states"]) <= {"PENDING", "RUNNING"}
    out = jobs.larsctl("cancel", job_id).stdout
    assert out.strip() == f"{job_id}: CANCELLED"
    assert jobs.status(job_id)["state"] == "CANCELLED"
    # Idempotent: a second cancel leaves it alone.
    assert jobs.larsctl("cancel", job_id).stdout.strip() == f"{job_id}: already CANCELLED"
    job_dir = row["job_dir"]
    stopped_at = max(int(p.stem.split("-")[-1]) for p in Path(job_dir, "checkpoints").glob("*.pt"))
    assert stopped_at >= 3
    # The logs end with the cancel, not with a traceback that reads like a crash.
    (cancelled,) = jobs.events(job_dir, "cancelled")
    line = f"cancelled at step {cancelled['step']}"
    assert jobs.larsctl("logs", job_id).stdout.rstrip().splitlines()[-1] == f"larsctl: {line}"
    for rank in (0, 1):
        assert jobs.larsctl("logs", job_id, "--rank", str(rank)).stdout.rstrip().splitlines()[-1] == \
            f"trainer: {line}"
    (seg,) = jobs.status(job_id)["segments"]
    assert seg["cause"] == "cancelled" and seg["action"] == "stop" and seg["last_step"] == cancelled["step"]

    assert jobs.larsctl("resume", job_id).stdout.strip() == job_id
    # logs --follow streams until the job ends
    followed = jobs.larsctl("logs", job_id, "--follow", timeout=300).stdout
    assert "trainer: resumed from" in followed
    assert followed.rstrip().splitlines()[-1].startswith("larsctl: segment 1 ended: completed (completed at step 40)")
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", what="COMPLETED after resume")
    assert done["progress"]["step"] == 40
    resumes = jobs.events(job_dir, "resume")
    assert resumes and resumes[-1]["step"] >= stopped_at > 0
    assert len(done["scheduler_ids"]) == 2
    first, second = done["segments"]
    assert (first["cause"], second["cause"]) == ("cancelled", "completed")
    assert second["first_step"] == resumes[-1]["step"] and second["resumed_from"] == resumes[-1]["path"]
    assert first["steps_lost"] == first["last_step"] - second["first_step"] == 0  # it checkpointed on TERM

    # A job that completed has nothing left to do: refused before anything is submitted.
    r = jobs.larsctl("resume", job_id, check=False)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.strip() == (f"Error: job {job_id} is COMPLETED (completed at step 40); there is nothing "
                                "to resume")
    assert len(jobs.status(job_id)["scheduler_ids"]) == 2


def test_usr2_requeues_in_place_and_completes_with_one_restart(jobs, ddp_profile):
    job_id = jobs.larsctl("submit", "--cluster", ddp_profile, *jobs.SHORT,
                          "--max-steps", "30").stdout.strip()
    row = jobs.wait_for(job_id, lambda r: jobs.step(r) >= 3, what="progress")
    # What Slurm's --signal=B:USR2 does: signal the batch script itself.
    os.kill(jobs.pid_of(row["job_dir"]), signal.SIGUSR2)
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", what="COMPLETED after USR2")
    assert done["restarts"] == 1
    assert done["progress"]["step"] == 30
    assert jobs.events(row["job_dir"], "preempted")
    assert jobs.events(row["job_dir"], "resume")[0]["step"] > 0
    assert "segment=0" in Path(row["job_dir"], "restarts").read_text()


def test_two_submits_at_once_get_distinct_recorded_ids(jobs, larsctl_dirs, tmp_path):
    """Also with a hostile job name and a workdir with spaces: quoted everywhere, nothing injected."""
    marker = tmp_path / "INJECTED"
    jobs.write_profile(larsctl_dirs["config"], "spaced", workdir=str(tmp_path / "run dir"))
    argv = [*jobs.LARSCTL, "submit", "--cluster", "spaced", *jobs.SHORT, "--max-steps", "2",
            "--name", f"a'b; touch {marker}"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ids = [o[0].strip() for o in outs]
    assert len(set(ids)) == 2
    rows = json.loads(jobs.larsctl("jobs", "--json").stdout)
    assert {row["id"] for row in rows} == set(ids)
    jobs.wait_for(ids[0], lambda r: r["state"] == "RUNNING", what="RUNNING")
    for job_id in ids:
        jobs.larsctl("cancel", job_id)
    assert not marker.exists()
    script = Path(rows[0]["job_dir"], "job.sh")
    assert " " in str(script)
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_dry_run_prints_script_and_launch_line_and_writes_nothing(jobs, larsctl_dirs):
    out = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--dry-run", "--chain", "2").stdout
    assert out.count("#!/usr/bin/env bash") == 2
    assert "# launch: python -m horovod.runner.launch" in out
    assert "--gloo -np 2" in out
    assert not (larsctl_dirs["home"] / "runs").exists()
    assert json.loads(jobs.larsctl("jobs", "--json").stdout) == []
