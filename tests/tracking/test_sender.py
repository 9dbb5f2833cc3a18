"""Rank 0's tracker thread on real files and a real MLflow store (a local directory: its SQLite
database), without training: segments written by the trainer's own MetricsLogger, a replay after
a resume from an older checkpoint, a disk that really fills up, a server that never answers."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.tracking.helpers import QUIET, first_values, metric_steps
from trainer.metrics import MetricsLogger
from trainer.tracking.sender import start_tracker
from trainer.tracking.state import RunInfo, read_sent

PLAN = {"nodes": 1, "gpus": 2, "gpus_per_node": 2, "per_gpu_batch": 8, "batches_per_allreduce": 1,
        "effective_batch": 16, "lr_rule": "legw", "base_lr": 2.0, "warmup_epochs": 1.0, "epsilon": 1e-5,
        "epochs": 8, "model": "resnet18", "precision": "fp32"}
SHAPE = {"ranks": 2, "batch_size": 8, "batches_per_allreduce": 1, "effective_batch": 16}


def make_job(tmp_path: Path, tracking: dict) -> Path:
    job = tmp_path / "demo-20261203-120000-abcd"
    job.mkdir()
    doc = {"job": {"name": "demo", "cluster": "local"}, "plan": PLAN,
           "cluster": {"name": "local", "gpu_type": "cpu", "engine": "horovod"},
           "trainer": {"base_op": "lars", "out_dir": str(job)}, "tracking": tracking}
    (job / "job.yaml").write_text(yaml.safe_dump(doc))
    return job


class Segment:
    """One trainer process's logging, as trainer.run sets it up: the tracker first, then the logger."""

    def __init__(self, job: Path):
        self.job = job
        self.tracker = start_tracker(job / "job.yaml", job)
        assert self.tracker is not None
        self.log = MetricsLogger(job / "metrics.jsonl", job / "tensorboard", True, self.tracker)

    def steps(self, first: int, last: int, seed: int) -> None:
        for step in range(first, last + 1):
            self.log.train(epoch=step / 100, step=step, total_steps=20, steps_per_epoch=100,
                           loss=seed + 1.0 / step, accuracy=step / 20, lr=0.1 * step, images_per_sec=80.0,
                           effective_batch=16, gns={"noise_scale": 100.0 + step})

    def checkpoint(self, step: int) -> Path:
        path = self.job / "checkpoints" / f"checkpoint-{step:08d}.pt"
        path.parent.mkdir(exist_ok=True)
        Path(f"{path}.sha256").write_text(json.dumps({"sha256": "0" * 64, "step": step}) + "\n")
        self.log.event("checkpoint", step, step / 100, path=str(path))
        return path


def wait_sent(job: Path, through: tuple[int, int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_sent(job) == through:
            return
        time.sleep(0.2)
    raise AssertionError(f"sent.json says {read_sent(job)}, not {through}")


def mlflow_client(store: Path):
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def test_two_segments_with_a_replay_make_one_run_with_every_step_once(tmp_path):
    store = tmp_path / "mlruns"
    job = make_job(tmp_path, {"backend": "mlflow", "uri": str(store)})
    first = Segment(job)
    first.log.event("start", 0, 0.0, shape=SHAPE)
    first.steps(1, 10, seed=0)
    first.checkpoint(10)
    first.steps(11, 12, seed=0)
    first.checkpoint(12)
    first.log.event("preempted", 12, 0.12)
    first.log.close()
    # The next segment resumes from step 10 (the newest checkpoint did not verify): 11 and 12 again.
    second = Segment(job)
    second.log.event("resume", 10, 0.1, path=str(job / "checkpoints/checkpoint-00000010.pt"),
                     shape={**SHAPE, "ranks": 1, "batches_per_allreduce": 2})
    second.steps(11, 20, seed=1)
    second.log.val(epoch=0.2, step=20, loss=0.5, accuracy=0.75, top5=1.0)
    manifest = Path(f"{second.checkpoint(20)}.sha256")
    second.log.event("done", 20, 0.2)
    second.log.close()

    info = RunInfo.read(job)
    client = mlflow_client(store)
    (run,) = client.search_runs([client.get_experiment_by_name("larsctl").experiment_id])
    assert run.info.run_id == info.run_id and run.info.run_name == job.name and run.info.status == "FINISHED"
    assert metric_steps(client, info.run_id, "train/loss") == list(range(1, 21))
    losses = {m.step: m.value for m in client.get_metric_history(info.run_id, "train/loss")}
    assert losses == first_values(job / "metrics.jsonl", "train", "loss")  # 11, 12: the first segment's
    assert losses[12] == 1 / 12 and losses[13] == 1 + 1 / 13
    assert [m.step for m in client.get_metric_history(info.run_id, "val/accuracy")] == [20]
    assert client.get_metric_history(info.run_id, "train/step_time_s")[0].value == pytest.approx(16 / 80)
    tags = run.data.tags
    assert {k: v for k, v in tags.items() if k.startswith("segment.")} == {
        "segment.0.shape": "2 ranks x 8 x k=1", "segment.0.first_step": "0", "segment.0.cause": "preempted",
        "segment.1.shape": "1 rank x 8 x k=2", "segment.1.first_step": "10", "segment.1.cause": "completed"}
    assert (tags["batch"], tags["lr"], tags["optimizer"]) == ("16", "2", "lars")
    assert run.data.params["split"] == "1x2x8x1" and run.data.params["gpu_type"] == "cpu"
    assert [a.path for a in client.list_artifacts(info.run_id)] == [manifest.name]
    assert read_sent(job) == (20, 1)


def test_a_segment_resumed_at_the_last_step_attaches_the_final_checkpoint_written_before_it(tmp_path):
    # A preemption on the last step checkpoints it; the next segment only validates and is done.
    store = tmp_path / "mlruns"
    job = make_job(tmp_path, {"backend": "mlflow", "uri": str(store)})
    first = Segment(job)
    first.log.event("start", 0, 0.0, shape=SHAPE)
    first.steps(1, 8, seed=0)
    manifest = Path(f"{first.checkpoint(8)}.sha256")
    first.log.event("preempted", 8, 0.08)
    first.log.close()
    second = Segment(job)
    second.log.event("resume", 8, 0.08, path=str(manifest)[:-len(".sha256")], shape=SHAPE)
    second.log.val(epoch=0.08, step=8, loss=0.5, accuracy=0.75, top5=1.0)
    second.log.event("done", 8, 0.08)
    second.log.close()

    info = RunInfo.read(job)
    client = mlflow_client(store)
    assert client.get_run(info.run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(info.run_id)] == [manifest.name]


def _fill(directory: Path) -> Path:
    ballast = directory / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=64k"], capture_output=True)
    return ballast


def test_a_full_disk_under_the_store_is_one_warning_and_the_values_go_when_there_is_room(
        tmp_path, mount_tmpfs, capfd):
    store = mount_tmpfs("16m") / "mlruns"
    job = make_job(tmp_path, {"backend": "mlflow", "uri": str(store)})
    segment = Segment(job)
    segment.log.event("start", 0, 0.0, shape=SHAPE)
    segment.steps(1, 5, seed=0)
    wait_sent(job, (5, 0))
    ballast = _fill(store.parent)
    started = time.monotonic()
    for step in range(6, 31):  # the logging steps go on at their pace while the tracker cannot write
        segment.steps(step, step, seed=0)
        time.sleep(0.2)
    assert time.monotonic() - started < 10
    assert read_sent(job) == (5, 0)
    ballast.unlink()
    segment.steps(31, 32, seed=0)
    wait_sent(job, (32, 0))
    segment.log.close()
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "failed" in warnings[0] and "training goes on" in warnings[0], err
    assert f"mlflow at {store} answers again: sent the metrics held since" in err
    client = mlflow_client(store)
    assert metric_steps(client, RunInfo.read(job).run_id, "train/loss") == list(range(1, 33))


def test_a_server_that_never_answers_does_not_hold_the_segment_up(tmp_path, capfd):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        job = make_job(tmp_path, {"backend": "mlflow", "uri": f"http://127.0.0.1:{silent.getsockname()[1]}"})
        segment = Segment(job)
        segment.log.event("start", 0, 0.0, shape=SHAPE)
        segment.steps(1, 3, seed=0)
        started = time.monotonic()
        segment.tracker.close(timeout=3)
        assert time.monotonic() - started < 5
    # The server went away: the thread's request fails and the thread ends, saying so, within the
    # backend's request timeout (it must not outlive the test and print into a later one).
    segment.tracker._thread.join(30)
    assert not segment.tracker._thread.is_alive()
    err = capfd.readouterr().err
    assert "failed:" in err and "the metrics wait and are sent when it answers again" in err
    assert "still busy after 3 s; the values it does not have yet go with the next segment" in err
    assert read_sent(job) is None and RunInfo.read(job).run_id is None
