"""larsctl.results.runs on real event files (torch's SummaryWriter) and real metrics.jsonl."""
from __future__ import annotations

import json

import pytest
import yaml

from larsctl.results.metrics import read_records
from larsctl.results.runs import NoResults, TAGS, load_run


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_curves_come_from_the_event_files_with_every_point(make_run):
    run = load_run(make_run("b64", batch=64, steps_per_epoch=10, epochs=3))
    assert run.source == "tensorboard"
    assert set(run.curves) == set(TAGS)
    records = jsonl(run.job_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [p.step for p in run.curves["train/loss"]] == [r["step"] for r in train]
    # Event files store float32.
    assert [p.value for p in run.curves["train/lr"]] == pytest.approx([r["lr"] for r in train], rel=1e-6)
    assert [p.step for p in run.curves["val/accuracy"]] == [10, 20, 30]
    assert run.epochs("val/accuracy") == [1.0, 2.0, 3.0]
    assert run.epochs("train/loss")[:2] == [0.1, 0.2]


def test_metrics_jsonl_is_the_fallback_without_event_files(make_run):
    run = load_run(make_run("plain", tensorboard=False))
    assert run.source == "metrics.jsonl"
    val = [r for r in jsonl(run.job_dir / "metrics.jsonl") if r["kind"] == "val"]
    assert [p.value for p in run.curves["val/top5"]] == [r["top5"] for r in val]


def test_event_files_alone_are_read_against_steps(make_run):
    run = load_run(make_run("copied", jsonl=False, job_yaml=False))
    assert run.source == "tensorboard"
    assert run.epochs("train/loss") is None  # epoch length unknown without metrics.jsonl
    summary = run.summary()
    assert summary.steps == 30
    assert summary.last_val_top1 == pytest.approx(run.curves["val/accuracy"][-1].value)
    assert summary.effective_batch is None and summary.gpu_hours is None


def test_metrics_jsonl_wins_while_the_event_files_lag_behind(make_run):
    root = make_run("running", steps_per_epoch=10, epochs=3)
    # The writer of a running job has flushed only its first steps so far.
    for events in (root / "tensorboard").iterdir():
        events.unlink()
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(root / "tensorboard"))
    for step in range(1, 6):
        writer.add_scalar("train/loss", 9.0, step)
    writer.close()
    run = load_run(root)
    assert run.source == "metrics.jsonl"
    assert run.curves["train/loss"][-1].step == 30


def test_tensor_style_scalars_are_read_too(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "job" / "tensorboard"))
    for step in range(1, 4):
        writer.add_scalar("val/accuracy", step / 10, step, new_style=True)
    writer.close()
    run = load_run(tmp_path / "job")
    assert [(p.step, round(p.value, 6)) for p in run.curves["val/accuracy"]] == [(1, 0.1), (2, 0.2), (3, 0.3)]


def test_final_numbers_from_job_yaml_and_metrics(make_run):
    summary = load_run(make_run("b256", batch=256, gpus=4, steps_per_epoch=5, epochs=4)).summary()
    val = [r for r in jsonl(summary_path(summary)) if r["kind"] == "val"]
    assert summary.effective_batch == 256 and summary.per_gpu_batch == 64 and summary.gpus == 4
    assert summary.base_lr == pytest.approx(2 ** 2.5) and summary.warmup_epochs == 10 / 2 ** 6
    assert summary.epsilon == 1e-5 and summary.optimizer == "LARS"
    assert summary.epochs == 4.0 and summary.steps == 20
    # Exactly the metrics.jsonl values, not the float32 copies in the event files.
    assert summary.last_val_top1 == val[-1]["accuracy"]
    assert summary.best_val_top1 == max(r["accuracy"] for r in val)
    assert summary.last_val_top5 == val[-1]["top5"]
    assert summary.wall_time_s == 21.0  # start at T0, done at T0 + 20 steps + 1 s
    assert summary.gpu_hours == pytest.approx(4 * 21.0 / 3600)


def summary_path(summary):
    from pathlib import Path

    return Path(summary.job_dir) / "metrics.jsonl"


def test_a_resumed_run_counts_rerun_steps_once_and_not_the_queue_time(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"kind": "event", "time": 0.0, "event": "start", "step": 0, "epoch": 0},
        *({"kind": "train", "time": float(s), "epoch": s / 10, "step": s, "steps_per_epoch": 10,
           "loss": 1.0, "accuracy": 0.1, "lr": 0.1, "images_per_sec": 1.0} for s in range(1, 8)),
        {"kind": "event", "time": 7.5, "event": "preempted", "step": 7, "epoch": 0.7},
        # Requeued an hour later from the checkpoint at step 5: steps 6 and 7 run again.
        {"kind": "event", "time": 3600.0, "event": "resume", "step": 5, "epoch": 0.5},
        *({"kind": "train", "time": 3600.0 + s, "epoch": s / 10, "step": s, "steps_per_epoch": 10,
           "loss": 0.5, "accuracy": 0.2, "lr": 0.1, "images_per_sec": 1.0} for s in range(6, 11)),
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"kind": "tra')  # torn tail
    records = read_records(path, strict=True)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 11))
    assert [r["loss"] for r in train if r["step"] >= 6] == [0.5] * 5
    run = load_run(tmp_path)
    assert run.source == "metrics.jsonl"
    assert run.summary().wall_time_s == pytest.approx(7.5 + 10.0)


def test_tensorboard_purges_steps_rerun_after_a_resume(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "job" / "tensorboard"
    first = SummaryWriter(str(logdir), filename_suffix=".a")
    for step in range(1, 8):
        first.add_scalar("train/loss", 1.0, step, walltime=100.0 + step)
    first.close()
    second = SummaryWriter(str(logdir), filename_suffix=".b")
    for step in range(6, 11):
        second.add_scalar("train/loss", 0.5, step, walltime=200.0 + step)
    second.close()
    points = load_run(tmp_path / "job").curves["train/loss"]
    assert [p.step for p in points] == list(range(1, 11))
    assert [p.value for p in points if p.step >= 6] == [0.5] * 5


@pytest.mark.parametrize("content, message", [
    ("", "no metrics yet"),
    ('{"kind": "event", "time": 1, "event": "start", "step": 0, "epoch": 0}\n', "no metrics yet"),
    ('{"kind": "train"\n{"kind": "val"}\n', "metrics.jsonl:1: not a JSON object"),
])
def test_unreadable_or_empty_jobs_name_the_file(tmp_path, content, message):
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(NoResults, match=message) as info:
        load_run(tmp_path)
    assert str(tmp_path) in info.value.message and "\n" not in info.value.message


def test_a_broken_job_yaml_names_its_line(make_run):
    root = make_run("bad")
    (root / "job.yaml").write_text("job: {name: x\nplan: [\n")
    with pytest.raises(NoResults, match=r"job\.yaml:\d+: not valid YAML"):
        load_run(root)


def test_a_wrong_job_yaml_value_names_its_field(make_run):
    root = make_run("bad-value")
    spec = yaml.safe_load((root / "job.yaml").read_text())
    spec["plan"]["effective_batch"] = "lots"
    (root / "job.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(NoResults, match=r"job\.yaml: plan\.effective_batch: expected a number, got 'lots'"):
        load_run(root).summary()
