"""Restarts and the end of warmup on every panel of ``larsctl report``, and the jobs' segments
under the HTML figure and in the text summary.

The job directories are written the way a job writes them: job.yaml by larsctl's own
resolve_job (as submit does), each segment opened and closed by the batch script's
``python -m trainer.supervisor begin`` / ``finish`` (their main(), in process), a node that
died leaving only its ranks' heartbeat records (the next ``begin`` closes its segment), and
the trainer's records through the trainer's own MetricsLogger (metrics.jsonl and TensorBoard
event files)."""
from __future__ import annotations

import contextlib
import io
import json
import re
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from matplotlib import rc_context

from larsctl.cli import cli
from larsctl.jobs.registry import JobRecord, save_copy
from larsctl.planning.spec import resolve_job
from larsctl.results import plots
from larsctl.results.runs import load_run
from trainer.metrics import MetricsLogger
from trainer.supervisor.__main__ import main as supervisor
from trainer.supervisor.records import AttemptPaths, write_json

REPO = Path(__file__).resolve().parents[2]
SPE = 10  # steps per epoch (effective batch 32 throughout)


class JobWriter:
    """One job directory, segment by segment."""

    def __init__(self, root: Path, warmup_epochs: float = 1.5, epochs: int = 10, **shape):
        self.root = root
        root.mkdir(parents=True)
        spec = resolve_job("local", REPO / "jobs" / "demo.yaml", name=root.name, base_lr=2.0,
                           warmup_epochs=warmup_epochs, epochs=epochs).to_dict()
        spec["plan"].update(effective_batch=32)
        (root / "job.yaml").write_text(yaml.safe_dump(spec))
        self.reshape(**{"nodes": 1, "gpus_per_node": 2, "per_gpu_batch": 16, "batches_per_allreduce": 1, **shape})
        self.total = epochs * SPE
        self.segments = 0

    def reshape(self, **shape) -> None:
        """What a resume with another shape changes in job.yaml's plan."""
        spec = yaml.safe_load((self.root / "job.yaml").read_text())
        spec["plan"].update(shape, gpus=shape["nodes"] * shape["gpus_per_node"])
        (self.root / "job.yaml").write_text(yaml.safe_dump(spec))
        self.plan = spec["plan"]

    def segment(self, first: int | None, last: int | None, rc: int | None = 0, trains: bool = True) -> int:
        """Segment from step ``first`` to ``last``, closed by ``finish --rc rc``; rc None: its node
        died (heartbeats only; the next segment's ``begin`` closes it)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            supervisor(["begin", "--job-dir", str(self.root), "--scheduler-id", str(100 + self.segments),
                        "--segment", str(self.segments)])
        number = int(out.getvalue().split()[-1])
        self.segments += 1
        if trains:
            self._train(first, last)
        if rc is None:
            for rank in range(self.plan["gpus"]):  # what each rank's heartbeat process left
                write_json(AttemptPaths(self.root, number).heartbeat(rank), {
                    "rank": rank, "host": "node7", "pid": 4242 + rank, "seq": 9, "counter": last or 0,
                    "step": last or 0, "phase": "data" if trains else "startup", "state": "S",
                    "time": time.time(), "period": 5.0, "idle_s": 0.2})
        else:
            if trains:
                self._rank_ends(number, rc, last)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                supervisor(["finish", "--job-dir", str(self.root), "--attempt", str(number), "--rc", str(rc)])
        time.sleep(0.01)  # the next segment starts strictly later
        return number

    def _rank_ends(self, number: int, rc: int, step: int) -> None:
        """Each rank's record of how it ended, as the trainer writes it (RankSupervision.end)."""
        cause, detail = {0: ("completed", f"completed at step {step}"),
                         75: ("preempted", f"stopped by a signal at step {step}; checkpoint written")}[rc]
        for rank in range(self.plan["gpus"]):
            write_json(AttemptPaths(self.root, number).rank_end(rank), {
                "rank": rank, "host": "node7", "pid": 4242 + rank, "cause": cause, "step": step, "detail": detail,
                "error": None, "victim": False, "time": time.time()})

    def _train(self, first: int, last: int) -> None:
        log = MetricsLogger(self.root / "metrics.jsonl", self.root / "tensorboard", enabled=True)
        shape = {"ranks": self.plan["gpus"], "batch_size": self.plan["per_gpu_batch"],
                 "batches_per_allreduce": self.plan["batches_per_allreduce"], "effective_batch": 32}
        if first == 0:
            log.event("start", 0, 0.0, shape=shape)
        else:
            log.event("resume", first, first / SPE, shape=shape,
                      path=str(self.root / "checkpoints" / f"checkpoint-{first:08d}.pt"))
        for step in range(first + 1, last + 1):
            log.train(epoch=step / SPE, step=step, total_steps=self.total, steps_per_epoch=SPE, loss=2.0 / step,
                      accuracy=step / self.total, lr=min(1.0, step / 15), images_per_sec=50.0, effective_batch=32)
            if step % SPE == 0:
                log.val(epoch=step / SPE, step=step, loss=1.0 / step, accuracy=step / self.total, top5=0.9)
        if last == self.total:
            log.event("done", last, last / SPE)
        log.close()


@pytest.fixture
def job(tmp_path):
    """Preempted at step 40 (resumed from 30), its node lost at step 70 (resumed from 60 on
    one GPU with 2 batches per allreduce: the same effective batch), completed at 100."""
    writer = JobWriter(tmp_path / "runs" / "b32")
    writer.segment(0, 40, rc=75)
    writer.segment(30, 70, rc=None)
    writer.reshape(nodes=1, gpus_per_node=1, per_gpu_batch=16, batches_per_allreduce=2)
    writer.segment(60, 100, rc=0)
    return writer.root


def marker_lines(ax, kind: str) -> list[float]:
    """The x of each vertical marker line of ``kind`` drawn in ``ax``."""
    return [segments[0][0][0] for segments in
            (c.get_segments() for c in ax.collections if c.get_gid() == kind)]


def labels(ax) -> dict[str, float]:
    return {t.get_text(): t.get_position()[0] for t in ax.texts if (t.get_gid() or "").endswith("-label")}


def test_segments_of_the_job_as_written(job):
    run = load_run(job)
    assert [(s.number, s.cause, s.first_step, s.last_step, s.shape_text) for s in run.segments] == [
        (0, "preempted", 0, 40, "1x2x16x1"), (1, "node_fail", 30, 70, "1x2x16x1"),
        (2, "completed", 60, 100, "1x1x16x2")]


def test_every_panel_marks_each_restart_with_its_cause_and_the_end_of_warmup(job):
    run = load_run(job)
    fig = plots.build_figure([run], plots.default_panels([run]), 1600, 1000, 100)
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert marker_lines(ax, "restart") == [3.0]  # step 30 at 10 steps per epoch
        assert marker_lines(ax, "reshape") == [6.0]
        assert marker_lines(ax, "warmup") == [1.5]  # warmup 1.5 epochs = 15 steps
        assert labels(ax) == {"preempted": 3.0, "node_fail: 1x2x16x1 -> 1x1x16x2": 6.0, "end of warmup": 1.5}
    restart, reshape = (next(c for c in fig.axes[0].collections if c.get_gid() == kind)
                        for kind in ("restart", "reshape"))
    assert restart.get_linestyle() != reshape.get_linestyle()  # told apart by style, not only by label
    assert reshape.get_linewidth()[0] > restart.get_linewidth()[0]
    assert [t.get_text() for t in fig.legends[1].get_texts()] == [
        "restart (labelled: why the run before it ended)", "restart with a new shape (before -> after)",
        "end of the learning-rate warmup"]


def test_the_saved_figure_shows_the_labels(job, tmp_path):
    run = load_run(job)
    fig = plots.build_figure([run], plots.default_panels([run]), 1200, 800, 100)
    svg = io.BytesIO()
    with rc_context({"svg.fonttype": "none"}):  # text as text, so it can be read back
        fig.savefig(svg, format="svg")
    text = svg.getvalue().decode()
    for label in ("preempted", "node_fail: 1x2x16x1 -&gt; 1x1x16x2", "end of warmup"):
        assert text.count(f">{label}<") == 4  # once on each panel


def test_html_lists_the_segments_under_the_figure(job, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(job), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.index("<img ") < page.index("<h2>Segments of b32</h2>")
    table = page[page.index('<table class="segments">'):]
    assert "<th>Segment</th><th>Shape</th><th>Steps</th><th>Cause</th><th>Detail</th>" in table
    rows = re.findall(r"<tr><td>(\d)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>",
                      table)
    assert [row[:4] for row in rows] == [("0", "1x2x16x1", "0-40", "preempted"),
                                         ("1", "1x2x16x1", "30-70", "node_fail"),
                                         ("2", "1x1x16x2", "60-100", "completed")]
    assert rows[0][4] == "stopped by a signal at step 40; checkpoint written"
    assert "heartbeat of node7" in rows[1][4] and "stopped at step 70" in rows[1][4]


def test_the_text_summary_lists_the_segments(job, tmp_path):
    out = tmp_path / "report.png"
    result = CliRunner().invoke(cli, ["report", str(job), "--out", str(out), "--size", "900x600"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == [f"wrote {out} (900x600 px, 1 job)", "", "b32: 3 segments"]
    assert lines[3].split() == ["Segment", "Shape", "Steps", "Cause", "Detail"]
    assert [line.split()[:4] for line in lines[4:]] == [["0", "1x2x16x1", "0-40", "preempted"],
                                                       ["1", "1x2x16x1", "30-70", "node_fail"],
                                                       ["2", "1x1x16x2", "60-100", "completed"]]
    data = json.loads(CliRunner().invoke(cli, ["report", str(job), "--out", str(out), "--json"]).output)
    [entry] = data["jobs"]
    assert [s["cause"] for s in entry["segments"]] == ["preempted", "node_fail", "completed"]
    assert entry["markers"] == [
        {"step": 15, "kind": "warmup", "label": "end of warmup", "shape": None},
        {"step": 30, "kind": "restart", "label": "preempted", "shape": None},
        {"step": 60, "kind": "reshape", "label": "node_fail", "shape": "1x2x16x1 -> 1x1x16x2"}]


def test_segments_that_never_trained_add_their_cause_to_the_next_restart(tmp_path):
    writer = JobWriter(tmp_path / "flaky")
    writer.segment(0, 45, rc=75)
    writer.segment(None, None, rc=None, trains=False)  # its node died before the trainer started
    writer.segment(40, 100, rc=0)
    run = load_run(writer.root)
    assert [s.cause for s in run.segments] == ["preempted", "node_fail", "completed"]
    fig = plots.build_figure([run], plots.DEFAULT_PANELS, 1000, 700, 100)
    assert labels(fig.axes[0]) == {"preempted, node_fail": 4.0, "end of warmup": 1.5}


@pytest.fixture(scope="module")
def spot(tmp_path_factory):
    """40 preemptions in 200 steps (each resumed from the step before it stopped)."""
    writer = JobWriter(tmp_path_factory.mktemp("spot") / "spot", epochs=20, warmup_epochs=0.5)
    for first in range(0, 200, 5):
        writer.segment(max(0, first - 1), first + 5, rc=75 if first < 195 else 0)
    return writer.root


@pytest.mark.parametrize("width, height, most", [(1600, 1000, 39), (800, 600, 30), (500, 400, 20)])
def test_many_restarts_stay_readable(spot, width, height, most):
    """Every restart drawn; no two labels overlap: where they would, the label before counts
    the others ("(+N)"), fewer labels the smaller the figure."""
    run = load_run(spot)
    assert len(run.segments) == 40
    fig = plots.build_figure([run], plots.default_panels([run]), width, height, 100)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert len(marker_lines(ax, "restart")) == 39
        texts = [t for t in ax.texts if (t.get_gid() or "").endswith("-label")]
        # At 1600 px only the restart at step 4 shares its label with the end of warmup (step 5).
        assert 3 <= len(texts) <= most
        boxes = [t.get_window_extent(renderer) for t in texts]
        for i, a in enumerate(boxes):
            assert all(not a.overlaps(b) for b in boxes[i + 1:]), [t.get_text() for t in texts]
        counted = sum(1 + int(m[1]) if (m := re.search(r"\(\+(\d+)\)$", t.get_text())) else 1 for t in texts)
        assert counted == 39 + 1  # every restart and the end of warmup


def test_a_run_without_segment_records_marks_its_resume_events(tmp_path):
    """A plain trainer run: preempted at 40 and resumed from 30 with 1 rank x 2 batches per
    allreduce, then killed (no event) and resumed from 60."""
    writer = JobWriter(tmp_path / "plain")
    writer._train(0, 40)
    log = MetricsLogger(writer.root / "metrics.jsonl", writer.root / "tensorboard", enabled=True)
    log.event("preempted", 40, 4.0, message="signal 12")
    log.close()
    writer.reshape(nodes=1, gpus_per_node=1, per_gpu_batch=16, batches_per_allreduce=2)
    writer._train(30, 70)
    writer._train(60, 100)
    (writer.root / "job.yaml").unlink()
    run = load_run(writer.root)
    assert run.segments == []
    fig = plots.build_figure([run], plots.DEFAULT_PANELS, 1200, 800, 100)
    ax = fig.axes[0]
    assert marker_lines(ax, "reshape") == [3.0] and marker_lines(ax, "restart") == [6.0]
    assert labels(ax) == {"preempted: 2x16x1 -> 1x16x2": 3.0, "restart": 6.0}  # no warmup known: none drawn
    result = CliRunner().invoke(cli, ["report", str(writer.root), "--out", str(tmp_path / "r.png")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2] == \
        "plain: restarted at step 30 (preempted; 2x16x1 -> 1x16x2), step 60 (restart)"
    html = tmp_path / "r.html"
    CliRunner().invoke(cli, ["report", str(writer.root), "--out", str(html)])
    assert "<p>plain: restarted at step 30 (preempted; 2x16x1 -&gt; 1x16x2), step 60 (restart)</p>" \
        in html.read_text()


def test_a_warmup_the_run_never_finished_and_no_warmup_are_not_drawn(tmp_path):
    short = JobWriter(tmp_path / "short", warmup_epochs=5.0)
    short.segment(0, 30, rc=75)  # warmup ends at step 50
    none = JobWriter(tmp_path / "none", warmup_epochs=0.0)
    none.segment(0, 100, rc=0)
    runs = [load_run(short.root), load_run(none.root)]
    fig = plots.build_figure(runs, plots.DEFAULT_PANELS, 1000, 700, 100)
    assert all(marker_lines(ax, "warmup") == [] for ax in fig.axes)
    assert len(fig.legends) == 1  # nothing marked: no marker legend


def test_a_running_job_shows_its_running_segment(tmp_path):
    writer = JobWriter(tmp_path / "live")
    writer.segment(0, 40, rc=75)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        supervisor(["begin", "--job-dir", str(writer.root), "--scheduler-id", "200", "--segment", "1"])
    writer._train(30, 55)
    save_copy(JobRecord(id="live-1", name="live", cluster="local", scheduler="local", job_dir=str(writer.root),
                        state="RUNNING"))  # what status leaves in job.json while the job runs
    run = load_run(writer.root)
    assert [(s.cause, s.detail) for s in run.segments] == [("preempted", "stopped by a signal at step 40; checkpoint written"),
                                                            (None, "running")]
    result = CliRunner().invoke(cli, ["report", str(writer.root), "--out", str(tmp_path / "r.png")])
    assert result.output.splitlines()[-1].split()[:4] == ["1", "1x2x16x1", "30-55", "running"]

