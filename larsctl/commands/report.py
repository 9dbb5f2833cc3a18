"""``larsctl report``, ``compare`` and ``tensorboard``: look at what jobs produced.

A JOB argument is a job id from the registry (``larsctl jobs``) or a job
directory path, so copied runs and plain ``python -m trainer --out-dir`` runs
can be reported too.
"""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from larsctl.errors import Failure, UserError, warn
from larsctl.facts.jobdir import JobPaths, atomic_write
from larsctl.results import tables
from larsctl.results.runs import Run, load_run

_OUT_FORMATS = (".png", ".html")
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_TB_START_TIMEOUT_S = 120.0


def resolve(job: str) -> tuple[str, Path]:
    """(name, job directory) of a job id or a job directory path."""
    path = Path(job).expanduser()
    if path.is_dir():
        return path.resolve().name, path.resolve()
    if "/" in job or job.startswith("."):
        raise UserError(f"{job}: no such job directory")
    from larsctl.jobs.registry import (
        Registry,  # sqlite: only when an id must be looked up
    )

    registry = Registry()
    try:
        record = registry.get(job)
    finally:
        registry.close()
    return record.id, Path(record.job_dir)


def load_runs(jobs: tuple[str, ...]) -> list[Run]:
    return [load_run(directory, name) for name, directory in (resolve(job) for job in jobs)]


def _parse_size(ctx, param, value: str) -> tuple[int, int]:
    match = _SIZE.match(value)
    if not match:
        raise UserError(f"--size {value!r}: expected WIDTHxHEIGHT in pixels, e.g. 1600x1000")
    width, height = int(match[1]), int(match[2])
    if not (200 <= width <= 10000 and 150 <= height <= 10000):
        raise UserError(f"--size {value}: expected 200..10000 x 150..10000 pixels")
    return width, height


def _echo_table(runs: list[Run], as_json: bool) -> None:
    summaries = [run.summary() for run in runs]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in tables.sort_by_batch(summaries)], indent=2))
    else:
        click.echo(tables.compare_table(summaries))


@click.command()
@click.argument("jobs", nargs=-1, required=True, metavar="JOB...")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("report.png"), show_default=True,
              help="Output file: .png (the figure) or .html (figure embedded + table of final numbers).")
@click.option("--metric", "metrics", multiple=True, metavar="TAG",
              help="Draw only these TensorBoard tags, one panel each (repeatable), e.g. val/accuracy. "
                   "Default: training loss, top-1/top-5, learning rate, images/s, and the gradient "
                   "noise scale for jobs that measured it.")
@click.option("--size", default="1600x1000", show_default=True, callback=_parse_size, metavar="WxH",
              help="Figure size in pixels, WIDTHxHEIGHT.")
@click.option("--dpi", type=click.IntRange(50, 600), default=100, show_default=True,
              help="Resolution; text scales with it at a fixed pixel size.")
@click.option("--smoothing", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0,
              show_default=True, metavar="W",
              help="TensorBoard-style smoothing weight (0..1) of the per-step training curves; "
                   "the raw values stay as a faint line.")
@click.option("--table", is_flag=True, help="Print the results table (as `larsctl compare`) instead.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the jobs' final numbers as JSON (with --table: instead of the text table).")
def report(jobs, out, metrics, size, dpi, smoothing, table, as_json):
    """Draw the training curves of one or more jobs: loss, top-1/top-5, LR, images/s, noise scale.

    One line per job, against epochs, with the legend "B=<effective batch>
    <optimizer>".  Curves come from the jobs' TensorBoard event files, or from
    metrics.jsonl when there are none (or they lag behind a running job).
    Every panel marks each restart (a new segment), labelled with why the run
    before it ended and, where the shape changed, the shapes before -> after,
    and the end of the learning-rate warmup; the jobs' segments are listed
    below the figure (HTML) and after the "wrote" line.

    \b
    Examples:
      larsctl report demo-20261125-033400-1a2b demo-20261125-041500-3c4d --out report.png
      larsctl report runs/b64 runs/b256 --out report.html --smoothing 0.6
      larsctl report runs/b64 runs/b256 --metric val/accuracy --metric train/lr --size 1200x500
    """
    from larsctl.results import plots  # matplotlib: only when drawing, not for --help

    try:
        panels = plots.panels_for(metrics)
    except ValueError as exc:
        raise UserError(f"--metric: {exc}") from None
    if not table and out.suffix.lower() not in _OUT_FORMATS:
        raise UserError(f"--out {out}: expected a file name ending in .png or .html")
    if not table and not out.parent.resolve().is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist")
    runs = load_runs(jobs)
    if table:
        _echo_table(runs, as_json)
        return
    if not metrics:
        panels = plots.default_panels(runs)
    fig = plots.build_figure(runs, panels, *size, dpi=dpi, smoothing=smoothing)
    png = plots.png_bytes(fig)
    summaries = [run.summary() for run in runs]
    if out.suffix.lower() == ".html":
        atomic_write(out, plots.html_page(png, summaries, runs=runs))
    else:
        atomic_write(out, png)
    _attach_to_trackers(runs, out)
    if as_json:
        jobs_json = [{**s.to_dict(), **_restarts_json(run)} for s, run in zip(summaries, runs)]
        click.echo(json.dumps({"out": str(out), "jobs": jobs_json}, indent=2))
    else:
        click.echo(f"wrote {out} ({size[0]}x{size[1]} px, {len(runs)} job{'s' * (len(runs) != 1)})")
        _echo_restarts(runs)


def _attach_to_trackers(runs: list[Run], out: Path) -> None:
    """The figure goes to the experiment-tracker run of every tracked job in it (said on stderr)."""
    from larsctl.jobs.tracking import attach

    for name in attach([run.job_dir for run in runs], out, warn):
        click.echo(f"attached {out} to the tracker run of {name}", err=True)


def _restarts_json(run: Run) -> dict:
    """A job's segments and the markers drawn for it (restarts, the end of warmup)."""
    from larsctl.results.markers import run_markers

    return {"segments": [seg.to_dict() for seg in run.segments],
            "markers": [{"step": m.step, "kind": m.kind, "label": m.label, "shape": m.shape or None}
                        for m in run_markers(run)]}


def _echo_restarts(runs: list[Run]) -> None:
    """Each job's segments (as under the HTML figure); a run without segment records: its restarts."""
    from larsctl.results.markers import WARMUP, run_markers

    for run in runs:
        if run.segments:
            click.echo(f"\n{run.name}: {len(run.segments)} segment{'s' * (len(run.segments) != 1)}")
            click.echo(tables.segment_table(run.segments))
            continue
        restarts = [m for m in run_markers(run) if m.kind != WARMUP]
        if restarts:
            click.echo(f"\n{run.name}: {tables.restarts_line(restarts)}")


@click.command()
@click.argument("jobs", nargs=-1, metavar="[JOB]...")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON (accuracies 0..1).")
def compare(jobs, as_json):
    """Table of final results sorted by effective batch (the reference README's form).

    Columns: job, effective batch, per-GPU batch, base LR, warmup epochs,
    epsilon, optimizer (the trainer's base_op), epochs done, last validation
    top-1.  Without JOB, every job in the registry that has metrics.

    \b
    Examples:
      larsctl compare
      larsctl compare demo-20261125-033400-1a2b runs/b256 --json
    """
    if jobs:
        runs = load_runs(jobs)
    else:
        runs = _all_runs()
    _echo_table(runs, as_json)


def _all_runs() -> list[Run]:
    from larsctl.jobs.registry import Registry
    from larsctl.results.runs import NoResults

    registry = Registry()
    try:
        records = registry.all()
    finally:
        registry.close()
    runs = []
    for record in records:
        try:
            runs.append(load_run(Path(record.job_dir), record.id))
        except NoResults:  # still queued, or failed before its first step
            continue
    if not runs:
        raise UserError(f"no job with metrics yet in {registry.path} (see `larsctl jobs`)")
    return runs


@click.command()
@click.argument("jobs", nargs=-1, required=True, metavar="JOB...")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1; 0 picks a free one.")
def tensorboard(jobs, port):
    """Start TensorBoard on the jobs' event files, bound to 127.0.0.1, until Ctrl-C.

    Each job appears as one run named by its id; curves update while jobs run.
    On a cluster, forward the port: ssh -L 6006:127.0.0.1:6006 login-node.

    \b
    Example:
      larsctl tensorboard demo-20261125-033400-1a2b runs/b256 --port 6006
    """
    spec = logdir_spec([resolve(job) for job in jobs])
    port = port or free_port()
    if port_in_use(port):
        raise UserError(f"--port {port}: already in use on 127.0.0.1")
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec,
               "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        # SIGTERM (a test, a scheduler) stops TensorBoard as Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            _wait_until_serving(proc, url, log)
            click.echo(f"TensorBoard at {url} ({len(jobs)} job{'s' * (len(jobs) != 1)}; Ctrl-C to stop)")
            proc.wait()
            raise Failure(f"TensorBoard exited with code {proc.returncode}: {_last_line(log)}")
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            _stop(proc)


def logdir_spec(jobs: list[tuple[str, Path]]) -> str:
    """``name1:dir1,name2:dir2`` for TensorBoard's --logdir_spec (names made unique)."""
    parts, seen = [], set()
    for name, directory in jobs:
        logdir = JobPaths(directory).tensorboard
        if not logdir.is_dir():
            raise UserError(f"{directory}: no tensorboard/ directory (not a job directory?)")
        if "," in str(logdir):
            raise UserError(f"{logdir}: TensorBoard cannot take a directory whose path has a comma")
        label = re.sub(r"[,:]", "_", name)
        unique, n = label, 1
        while unique in seen:
            n += 1
            unique = f"{label}-{n}"
        seen.add(unique)
        parts.append(f"{unique}:{logdir}")
    return ",".join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _wait_until_serving(proc: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + _TB_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failure(f"TensorBoard exited with code {proc.returncode}: {_last_line(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise Failure(f"TensorBoard did not answer at {url} within {_TB_START_TIMEOUT_S:.0f} s")


def _last_line(log) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
