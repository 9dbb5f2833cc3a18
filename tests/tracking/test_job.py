"""Real jobs with the real trackers: `larsctl submit --track` on the local profile, the real trainer,
preempted as Slurm does it (USR2 to the batch script) and resumed on another shape.

MLflow: a tracking server the test starts (SQLite backend), read back with MlflowClient.  W&B:
offline, its run files read back with W&B's own reader.  One tracker per job, so MLflow gets the
job with every fault (preempted twice, then resumed on 2 workers) and W&B a short one preempted once.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.tracking.helpers import first_values, metric_steps, wandb_history, wandb_records, wandb_summary
from trainer.tracking.state import RunInfo, read_sent

pytestmark = pytest.mark.slow

SMALL = ["--set", "checkpoint_every_steps=100"]  # the preemptions checkpoint; no others needed


def wait_until(predicate, what: str, timeout: float = 240) -> None:
    """Poll the job directory's files (cheap: a `larsctl status` a second would take a core from the job)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.3)


def trained(job_dir: Path, segment: int, past: int) -> bool:
    """Whether the trainer's ``segment``-th run (its start or resume event in metrics.jsonl) trained past ``past``."""
    try:
        lines = (job_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return False
    starts, last = -1, 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # the line being written
            continue
        starts += record.get("event") in ("start", "resume")
        if starts == segment and record.get("kind") == "train":
            last = record["step"]
    return starts == segment and last > past


def preempt(jobs, job_dir: Path, segment: int, past: int) -> None:
    """What Slurm's --signal=B:USR2 does, once segment ``segment`` has trained past step ``past``: USR2 to
    the batch script (a requeue in place keeps it)."""
    wait_until(lambda: trained(job_dir, segment, past), f"segment {segment} past step {past}")
    os.kill(jobs.pid_of(job_dir), signal.SIGUSR2)


def ended(job_dir: Path, batch_segment: int) -> bool:
    """Whether the batch script of the scheduler's ``batch_segment`` (submit: 0, each resume: one more) ended."""
    return (job_dir / "state" / f"segment-{batch_segment}.status").exists()


def test_a_job_preempted_twice_and_resumed_on_two_workers_is_one_mlflow_run_with_every_step_once(
        jobs, ddp_profile, mlflow_server, larsctl_dirs, tmp_path):
    job_id = jobs.larsctl("submit", "--cluster", ddp_profile, *jobs.SHORT, *SMALL, "--gpus", "1",
                          "--max-steps", "16", "--max-restarts", "1", "--track", f"mlflow:{mlflow_server.url}").stdout.strip()
    job_dir = larsctl_dirs["home"] / "runs" / job_id
    preempt(jobs, job_dir, 0, 2)
    preempt(jobs, job_dir, 1, 0)  # requeued in place, then preempted with no restart left: it stops
    wait_until(lambda: ended(job_dir, 0), "end after the second preemption")
    jobs.larsctl("resume", job_id, "--gpus", "2")
    wait_until(lambda: ended(job_dir, 1), "end of the resumed segment")
    done = jobs.status(job_id)
    assert done["state"] == "COMPLETED"
    assert [s["cause"] for s in done["segments"]] == ["preempted", "preempted", "completed"]
    assert [s["shape_text"] for s in done["segments"]] == ["1x1x8x2", "1x1x8x2", "1x2x8x1"]

    client = mlflow_server.client()
    info = RunInfo.read(job_dir)
    (run,) = client.search_runs([client.get_experiment_by_name("larsctl").experiment_id])
    assert (run.info.run_id, run.info.run_name, run.info.status) == (info.run_id, job_id, "FINISHED")
    steps = list(range(1, 17))
    assert metric_steps(client, info.run_id, "train/loss") == steps  # every step once, in order
    losses = {m.step: m.value for m in client.get_metric_history(info.run_id, "train/loss")}
    assert losses == pytest.approx(first_values(job_dir / "metrics.jsonl", "train", "loss"))
    assert [m.step for m in client.get_metric_history(info.run_id, "val/accuracy")] == [16]
    assert read_sent(job_dir) == (16, 1)
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("segment.")}
    assert {k: v for k, v in tags.items() if not k.endswith("first_step")} == {
        "segment.0.shape": "1x1x8x2", "segment.0.cause": "preempted",
        "segment.1.shape": "1x1x8x2", "segment.1.cause": "preempted",
        "segment.2.shape": "1x2x8x1", "segment.2.cause": "completed"}
    assert [int(tags[f"segment.{n}.first_step"]) for n in range(3)] == [s["first_step"] for s in done["segments"]]
    params = run.data.params
    assert (params["effective_batch"], params["split"], params["cluster"], params["lr_rule"]) == \
        ("16", "1x1x8x2", ddp_profile, "legw")
    assert {"base_lr", "warmup_epochs", "gpu_type"} <= set(params)
    (manifest,) = [a.path for a in client.list_artifacts(info.run_id)]
    assert manifest.endswith(".pt.sha256")

    # The report's figure goes to the same run.
    figure = tmp_path / "report.png"
    r = jobs.larsctl("report", job_id, "--out", str(figure))
    assert f"attached {figure} to the tracker run of {job_id}" in r.stderr
    assert sorted(a.path for a in client.list_artifacts(info.run_id)) == sorted([manifest, "report.png"])
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_a_preempted_job_is_one_wandb_offline_run_with_every_step_once(jobs, ddp_profile, larsctl_dirs):
    # 24 steps: the USR2 sent after step 3 must land before the run ends (with 8 it once did not).
    job_id = jobs.larsctl("submit", "--cluster", ddp_profile, *jobs.SHORT, *SMALL, "--gpus", "1", "--max-steps", "24",
                          "--track", "wandb:offline").stdout.strip()
    job_dir = larsctl_dirs["home"] / "runs" / job_id
    preempt(jobs, job_dir, 0, 2)
    wait_until(lambda: ended(job_dir, 0), "end of the requeued job")
    done = jobs.status(job_id)
    assert done["state"] == "COMPLETED"
    assert [s["cause"] for s in done["segments"]] == ["preempted", "completed"]

    info = RunInfo.read(job_dir)
    records = wandb_records(job_dir / "tracking", info.run_id)
    assert len({directory for directory, _, _ in records}) == 2  # one offline directory per segment
    rows = wandb_history(records)
    assert [row["_step"] for row in rows] == list(range(1, 25))  # every step once, in order
    losses = first_values(job_dir / "metrics.jsonl", "train", "loss")
    assert {row["_step"]: row["train/loss"] for row in rows} == pytest.approx(losses)
    assert rows[-1]["val/accuracy"] == pytest.approx(done["progress"]["val_accuracy"])
    summary = wandb_summary(records)
    assert (summary["segment.0.cause"], summary["segment.1.cause"]) == ("preempted", "completed")
    runs = [r.run for _, kind, r in records if kind == "run"]  # each segment's init: the same run, the plan
    assert [run.run_id for run in runs] == [info.run_id] * 2
    configs = [{i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"} for run in runs]
    assert configs[0] == configs[1]
    assert (configs[0]["effective_batch"], configs[0]["split"], configs[0]["cluster"]) == (16, "1x1x8x2", ddp_profile)
    assert read_sent(job_dir) == (24, 1)
