"""Restart and warmup markers on job directories the real trainer wrote (1 CPU rank, digits,
16 px): stopped by SIGUSR2 (it checkpoints and exits 75) and resumed with 2 batches per
allreduce, once as a larsctl job's segments (``python -m trainer.supervisor begin`` /
``finish`` around each run, as the batch script does) and once as a plain
``python -m trainer --out-dir DIR`` run (no job.yaml, no attempts/: its resume event and the
config in its checkpoints)."""
from __future__ import annotations

import contextlib
import io
import json
import signal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.planning.spec import resolve_job
from larsctl.results import plots
from larsctl.results.runs import load_run
from tests.trainer.helpers import TINY, records, run, start, wait_for
from trainer.supervisor.__main__ import main as supervisor

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STEPS, WARMUP_EPOCHS = 24, 0.5
ARGS = TINY + ["--dataset", "digits", "--batch-size", "32", "--val-batch-size", "256", "--epochs", "2",
               "--warmup-epochs", str(WARMUP_EPOCHS), "--max-steps", str(STEPS), "--checkpoint-every-steps", "100",
               "--log-every-steps", "1"]


def train_until_preempted(out: Path, extra: list[str]) -> int:
    """Start the trainer, SIGUSR2 it once it has trained 6 steps; the step it stopped at."""
    log = out.parent / f"{out.name}.log"
    proc = start("python", 1, ARGS + extra + ["--out-dir", str(out)], log)
    wait_for(lambda: any(r["kind"] == "train" and r["step"] >= 6 for r in records(out)), 240, "step 6", proc)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=240) == 75, log.read_text()[-3000:]
    [stop] = [r for r in records(out) if r["kind"] == "event" and r["event"] == "preempted"]
    return stop["step"]


def resume(out: Path, extra: list[str]) -> None:
    log = out.parent / f"{out.name}.log"
    assert run("python", 1, ARGS + extra + ["--batches-per-allreduce", "2", "--out-dir", str(out)], log) == 0, \
        log.read_text()[-3000:]


def supervise(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert supervisor(list(argv)) == 0
    return out.getvalue().split()[0]


def write_job_yaml(job: Path, k: int) -> None:
    """What larsctl wrote for this job (resolve_job), with the plan of this launch: 1 rank x 32 x k."""
    spec = resolve_job("local", REPO / "jobs" / "demo.yaml", name=job.name, warmup_epochs=WARMUP_EPOCHS,
                       epochs=2).to_dict()
    spec["plan"].update(nodes=1, gpus=1, gpus_per_node=1, per_gpu_batch=32, batches_per_allreduce=k,
                        effective_batch=32 * k)
    job.mkdir(exist_ok=True)
    (job / "job.yaml").write_text(yaml.safe_dump(spec))


def marker_x(ax, kind: str) -> list[float]:
    return [c.get_segments()[0][0][0] for c in ax.collections if c.get_gid() == kind]


def labels(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if (t.get_gid() or "").endswith("-label")]


def warmup_steps(out: Path) -> int:
    """Where the trainer's learning rate stopped rising (its schedule's warmup end)."""
    lr = {r["step"]: r["lr"] for r in records(out) if r["kind"] == "train"}
    return next(step for step in sorted(lr) if lr.get(step + 1, 0) < lr[step] or step + 1 not in lr) \
        if max(lr) > 0 else 0


def check_figure(job: Path, stopped: int, label: str) -> None:
    run_ = load_run(job)
    spe = run_.steps_per_epoch  # the curves' x: step / the last epoch length
    fig = plots.build_figure([run_], plots.default_panels([run_]), 1600, 1000, 100)
    peak = warmup_steps(job)
    first_spe = next(r["steps_per_epoch"] for r in records(job) if r["kind"] == "train")
    assert peak == round(WARMUP_EPOCHS * first_spe)  # the marker's rule is the trainer's
    for ax in fig.axes:
        assert marker_x(ax, "reshape") == [pytest.approx(stopped / spe)]
        assert marker_x(ax, "warmup") == [pytest.approx(peak / spe)]
        assert sorted(labels(ax)) == sorted(["end of warmup", label])


def test_a_job_preempted_and_resumed_with_another_shape(tmp_path):
    job = tmp_path / "job"
    write_job_yaml(job, k=1)
    assert supervise("begin", "--job-dir", str(job), "--scheduler-id", "1", "--segment", "0") == "0"
    stopped = train_until_preempted(job, [])
    supervise("finish", "--job-dir", str(job), "--attempt", "0", "--rc", "75", "--signal", "USR2")
    write_job_yaml(job, k=2)  # resumed on the same rank with 2 batches per allreduce
    assert supervise("begin", "--job-dir", str(job), "--scheduler-id", "2", "--segment", "1") == "1"
    resume(job, [])
    supervise("finish", "--job-dir", str(job), "--attempt", "1", "--rc", "0")

    assert [(s.cause, s.first_step, s.last_step, s.shape_text) for s in load_run(job).segments] == [
        ("preempted", 0, stopped, "1x1x32x1"), ("completed", stopped, STEPS, "1x1x32x2")]
    check_figure(job, stopped, "preempted: 1x1x32x1 -> 1x1x32x2")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(job), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [line.split()[:4] for line in result.output.splitlines()[4:]] == [
        ["0", "1x1x32x1", f"0-{stopped}", "preempted"], ["1", "1x1x32x2", f"{stopped}-{STEPS}", "completed"]]
    page = out.read_text()
    assert f"<tr><td>0</td><td>1x1x32x1</td><td>0-{stopped}</td><td>preempted</td>" \
           f"<td>stopped by a signal at step {stopped}; checkpoint written</td></tr>" in page
    assert f"<tr><td>1</td><td>1x1x32x2</td><td>{stopped}-{STEPS}</td><td>completed</td>" in page


def test_a_plain_trainer_run_preempted_and_resumed_with_another_shape(tmp_path):
    plain = tmp_path / "plain"
    stopped = train_until_preempted(plain, ["--base-op", "lamb"])
    resume(plain, ["--base-op", "lamb"])
    run_ = load_run(plain)
    assert run_.segments == [] and run_.spec["trainer"]["base_op"] == "lamb"  # from its checkpoint
    check_figure(plain, stopped, "preempted: 1x32x1 -> 1x32x2")
    result = CliRunner().invoke(cli, ["report", str(plain), "--out", str(tmp_path / "r.png")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2] == f"plain: restarted at step {stopped} (preempted; 1x32x1 -> 1x32x2)"
    [row] = json.loads(CliRunner().invoke(cli, ["compare", str(plain), "--json"]).output)
    assert (row["optimizer"], row["warmup_epochs"], row["per_gpu_batch"]) == ("LAMB", WARMUP_EPOCHS, 32)
    table = CliRunner().invoke(cli, ["compare", str(plain)]).output.splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[header.index("Optimizer")] == "LAMB"
