"""Every way a segment ends, caused for real on the local profile: the cause each segment
records, what the job does next by its policy, and what status says.

The faults are real: a rank stopped with SIGSTOP, a rank killed with SIGKILL, a loss that
really becomes infinite, a checkpoint directory that really runs out of space, a newest
checkpoint really truncated.  ``--fault-bound 20`` makes the watchdog give a rank 10 s
without progress (half the bound) instead of 90 s.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BOUND = ["--fault-bound", "20"]


def rank_pid(job_dir: str, rank: int, timeout: float = 60) -> int:
    """The pid of a rank of the running segment (its heartbeat says)."""
    from trainer.supervisor.records import current_attempt, read_json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attempt = current_attempt(job_dir)
        hb = read_json(attempt.heartbeat(rank)) if attempt else None
        if hb and hb.get("pid") and not hb.get("gone"):
            return int(hb["pid"])
        time.sleep(0.2)
    raise AssertionError(f"no heartbeat of rank {rank} in {job_dir}")


def segments_ended(n: int):
    return lambda row: len([s for s in row["segments"] if s["cause"]]) >= n


def test_a_stopped_rank_is_a_hang_that_is_ended_and_resumed(jobs):
    job_id = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--max-steps", "60",
                          "--set", "checkpoint_every_steps=5", *BOUND).stdout.strip()
    row = jobs.wait_for(job_id, lambda r: jobs.step(r) >= 8, what="progress")
    pid = rank_pid(row["job_dir"], 1)
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    row = jobs.wait_for(job_id, segments_ended(1), timeout=120, what="the hang noticed")
    noticed = time.monotonic() - stopped
    seg = row["segments"][0]
    assert seg["cause"] == "hang" and seg["action"] == "resume", seg
    assert "rank(s) 1" in seg["detail"] and "stopped (state T)" in seg["detail"], seg
    assert seg["host"] == os.uname().nodename
    assert noticed < 20 + 15, noticed  # within the bound (plus the status poll)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists(), "the stopped rank was left behind"
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=300, what="COMPLETED")
    assert done["restarts"] == 1 and done["progress"]["step"] == 60
    first, second = done["segments"]
    assert second["cause"] == "completed" and second["first_step"] % 5 == 0
    assert 0 <= first["steps_lost"] <= 5  # the checkpoint interval
    shown = jobs.larsctl("status", job_id).stdout
    assert "hang" in shown and "rank(s) 1" in shown


def test_a_killed_rank_is_a_crash_and_the_job_resumes(jobs):
    job_id = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--max-steps", "40",
                          "--set", "checkpoint_every_steps=5", *BOUND).stdout.strip()
    row = jobs.wait_for(job_id, lambda r: jobs.step(r) >= 8, what="progress")
    os.kill(rank_pid(row["job_dir"], 1), signal.SIGKILL)
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=300, what="COMPLETED")
    first, second = done["segments"]
    assert first["cause"] == "crash" and first["action"] == "resume", first
    assert "rank 1 on" in first["detail"] and "without a record" in first["detail"], first
    assert second["cause"] == "completed" and done["restarts"] == 1


def test_a_diverging_loss_stops_the_job_before_a_checkpoint_and_names_the_step(jobs):
    """Plain SGD at an absurd learning rate: the weights blow up after the first step."""
    job_id = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--max-steps", "40",
                          "--set", "base_op=sgd", "--base-lr", "1e30", "--warmup-epochs", "0",
                          "--set", "checkpoint_every_steps=1", *BOUND).stdout.strip()
    row = jobs.wait_for(job_id, lambda r: r["state"] == "FAILED", timeout=180, what="FAILED")
    (seg,) = row["segments"]
    assert seg["cause"] == "diverged" and seg["action"] == "stop", seg
    (event,) = jobs.events(row["job_dir"], "diverged")
    bad = event["step"]
    assert f"non-finite at step {bad}" in seg["detail"], seg
    steps = [int(p.stem.split("-")[-1]) for p in Path(row["job_dir"], "checkpoints").glob("*.pt")]
    assert steps and max(steps) < bad  # nothing of the diverged weights was written
    assert "diverged" in jobs.larsctl("status", job_id).stdout


def test_the_same_crash_at_the_same_step_twice_is_a_crash_loop_that_stops(jobs, mount_tmpfs):
    """The checkpoint directory is full: every segment fails writing its second checkpoint (128 KiB:
    room for one checkpoint of the small model, 91 KB, not for a second)."""
    small_disk = mount_tmpfs("128k")
    job_id = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--model", "smallcnn", "--max-steps", "40",
                          "--set", "checkpoint_every_steps=5", "--crash-resumes", "5", *BOUND).stdout.strip()
    checkpoints = Path(jobs.status(job_id)["job_dir"]) / "checkpoints"
    subprocess.run(["mount", "--bind", str(small_disk), str(checkpoints)], check=True)  # before the first step
    try:
        row = jobs.wait_for(job_id, lambda r: r["state"] == "FAILED", timeout=300, what="FAILED")
    finally:
        subprocess.run(["umount", "-l", str(checkpoints)], check=False)
    first, second = row["segments"]
    assert first["cause"] == second["cause"] == "crash", row["segments"]
    assert first["last_step"] == second["last_step"] == 10 and first["action"] == "resume"
    assert "No space left on device" in first["detail"], first
    assert second["action"] == "stop" and second["reason"].startswith("crash loop"), second
    assert "crash (crash loop)" in jobs.larsctl("status", job_id).stdout


def test_a_truncated_newest_checkpoint_is_skipped_and_status_says_why(jobs):
    job_id = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--max-steps", "40",
                          "--set", "checkpoint_every_steps=4").stdout.strip()
    jobs.wait_for(job_id, lambda r: jobs.step(r) >= 10, what="progress")
    jobs.larsctl("cancel", job_id)
    row = jobs.status(job_id)
    files = sorted(Path(row["job_dir"], "checkpoints").glob("*.pt"))
    newest, previous = files[-1], files[-2]
    with open(newest, "r+b") as fh:  # what a full quota does to a write in progress
        fh.truncate(newest.stat().st_size // 2)
    jobs.larsctl("resume", job_id)
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=300, what="COMPLETED")
    seg = done["segments"][1]
    assert seg["resumed_from"] == str(previous)
    assert seg["skipped"] == [[str(newest), "SHA-256 does not match its .sha256 file (truncated or corrupt)"]]
    shown = jobs.larsctl("status", job_id).stdout
    assert f"segment 1 skipped {newest}: SHA-256 does not match" in shown
    assert f"segment 1 resumed from {previous}" in shown
