"""``larsctl status`` and ``larsctl jobs``: where each job is, from its scheduler and its metrics."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from larsctl.errors import UserError, warn
from larsctl.facts.states import JobState
from larsctl.format import DASH, duration, number, render_table

_COLOURS = {JobState.COMPLETED: "green", JobState.RUNNING: "cyan", JobState.PENDING: "yellow",
            JobState.REQUEUED: "yellow", JobState.SUBMITTING: "yellow", JobState.FAILED: "red",
            JobState.TIMEOUT: "red", JobState.CANCELLED: "magenta", JobState.PREEMPTED: "magenta"}
HEADER = ["JOB", "STATE", "RESTARTS", "EPOCH/STEP", "LOSS", "VAL_ACC", "IMG/S", "ETA", "LAST END"]
SEGMENT_HEADER = ["SEG", "SHAPE", "STARTED", "STEPS", "LOST", "CAUSE", "HOST", "NEXT", "DETAIL"]


def _colour(cell: str) -> str | None:
    return _COLOURS.get(JobState(cell)) if cell in JobState.__members__ else None


def row_cells(row) -> list[str]:
    p = row.progress
    where = DASH
    if p.step is not None:
        where = f"{number(p.epoch, 3)}/{p.step}" + (f" ({p.fraction:.0%})" if p.fraction is not None else "")
    return [row.record.id, row.state.value, str(row.record.restarts), where,
            DASH if p.loss is None else f"{p.loss:.4f}",
            DASH if p.val_accuracy is None else f"{p.val_accuracy:.4f}",
            DASH if p.images_per_sec is None else f"{p.images_per_sec:.1f}",
            duration(p.eta_seconds) if row.state is JobState.RUNNING else DASH, last_end(row)]


def last_end(row) -> str:
    """The cause of the newest segment that ended (and, when the job stopped there, why)."""
    ended = [s for s in row.segments if s.cause is not None]
    if not ended:
        return DASH
    seg = ended[-1]
    loop = " (crash loop)" if seg.reason.startswith("crash loop") else ""
    return f"{seg.cause}{loop}"


def segment_cells(seg) -> list[str]:
    steps = DASH if seg.last_step is None else f"{seg.first_step if seg.first_step is not None else '?'}-{seg.last_step}"
    started = (seg.started or DASH).replace("T", " ").removesuffix("Z")
    nxt = seg.action or ("running" if seg.cause is None else DASH)
    return [str(seg.number), seg.shape_text, started, steps, DASH if seg.steps_lost is None else str(seg.steps_lost),
            seg.cause or "running", seg.host or DASH, nxt, seg.detail]


def show_segments(row) -> None:
    """Per segment: shape, steps, steps lost, cause, where, what next; checkpoints resumed or skipped."""
    if not row.segments:
        return
    click.echo(f"\n{row.record.id}: segments")
    click.echo(render_table(SEGMENT_HEADER, [segment_cells(s) for s in row.segments]))
    for seg in row.segments:
        if seg.resumed_from:
            click.echo(f"  segment {seg.number} resumed from {seg.resumed_from}")
        for path, why in seg.skipped:
            click.echo(f"  segment {seg.number} skipped {path}: {why}")
        if seg.action == "stop" and seg.cause != "completed":
            click.echo(f"  segment {seg.number}: {seg.reason}")


def note(text: str) -> None:
    """What larsctl did on its own (a node policy), on stderr."""
    click.echo(f"larsctl: {text}", err=True)


def _report(rows, errors: list[str]) -> None:
    for row in rows:
        for w in row.warnings:
            warn(w)
    for e in errors:
        warn(f"{e}; showing the last known state")


@click.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB]...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--watch", "-w", is_flag=True, help="Show live progress bars until the jobs end.")
@click.option("--sweep", help="The jobs of this sweep (larsctl sweep list).")
def status(job_ids, as_json, watch, sweep):
    """State, restarts and training progress of jobs (all jobs if none given).

    With --sweep, each job's grid point and its scheduler id (an array task's
    ARRAY_TASK on Slurm) come first.

    \b
    Examples:
      larsctl status
      larsctl status demo-20250101-120000-ab12 --json
      larsctl status --watch
      larsctl status --watch --sweep sweep-digits-sweep-20261125-120000-ab12
    """
    from larsctl.jobs import lifecycle
    from larsctl.jobs.registry import Registry

    registry = Registry()
    if sweep:
        registry.sweep(sweep)  # an unknown id is one line, exit 2
    records = [registry.get(j) for j in job_ids] if job_ids else registry.all(sweep=sweep)
    if watch:
        sys.exit(watch_jobs(registry, [r.id for r in records]))
    rows, errors = lifecycle.refresh(registry, records, adapt=note)
    _report(rows, errors)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    elif sweep:
        labels = _sweep_labels(registry, sweep)
        click.echo(render_table(["POINT", "TASK", *HEADER],
                                [[labels.get(r.record.id, DASH), (r.record.scheduler_ids or [DASH])[-1],
                                  *row_cells(r)] for r in rows], colours={3: _colour}))
    else:
        click.echo(render_table(HEADER, [row_cells(r) for r in rows], colours={1: _colour}))
    if not as_json:
        for row in rows:
            if row.state is JobState.UNKNOWN and row.reason:
                click.echo(f"{row.record.id}: UNKNOWN: {row.reason}")
        if job_ids:
            for row in rows:
                show_segments(row)
    if errors:
        sys.exit(1)


def _sweep_labels(registry, sweep_id: str) -> dict[str, str]:
    """Each job's grid point, from the sweep's sweep.json (none for a sweep from before it had one)."""
    from larsctl.jobs.sweep_file import load

    try:
        return load(registry, sweep_id).labels()
    except UserError:
        return {}


@click.command()
@click.option("--state", "-s", type=click.Choice([s.value for s in JobState], case_sensitive=False),
              help="Only jobs in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--sweep", help="Only the jobs of this sweep (larsctl sweep list).")
@click.option("--rebuild", "rebuild_dirs", multiple=True, type=click.Path(path_type=Path),
              metavar="DIR", help="Re-create the record of a job from its job directory, or of a sweep and "
                                  "its jobs from its sweep directory (repeatable).")
def jobs(state, as_json, sweep, rebuild_dirs):
    """List recorded jobs, or (with --rebuild) re-create lost records from job directories.

    \b
    Examples:
      larsctl jobs
      larsctl jobs --state RUNNING --json
      larsctl jobs --rebuild ~/.local/share/larsctl/runs/demo-20250101-120000-ab12
    """
    from larsctl.jobs import lifecycle
    from larsctl.jobs.registry import Registry
    from larsctl.jobs.sweep_file import rebuild

    registry = Registry()
    for directory in rebuild_dirs:
        for line in rebuild(registry, directory):
            click.echo(line)
    if rebuild_dirs:
        return
    if sweep:
        registry.sweep(sweep)  # an unknown id is one line, exit 2
    rows, errors = lifecycle.refresh(registry, registry.all(sweep=sweep), adapt=note)
    _report(rows, errors)
    if state:
        rows = [r for r in rows if r.state is JobState(state.upper())]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        cells = [[r.record.id, r.state.value, r.record.cluster,
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(r.record.created)), r.record.job_dir]
                 for r in rows]
        click.echo(render_table(["JOB", "STATE", "CLUSTER", "CREATED", "DIR"], cells, colours={1: _colour}))
    if errors:
        sys.exit(1)


def _bar_text(row) -> str:
    p = row.progress
    bits = [row.state.value]
    if row.record.restarts:
        bits.append(f"restarts {row.record.restarts}")
    if p.epoch is not None:
        bits.append(f"epoch {p.epoch:.2f}")
    if p.loss is not None:
        bits.append(f"loss {p.loss:.4f}")
    if p.val_accuracy is not None:
        bits.append(f"val {p.val_accuracy:.4f}")
    if p.images_per_sec is not None:
        bits.append(f"{p.images_per_sec:.0f} img/s")
    return ", ".join(bits)


def watch_jobs(registry, job_ids: list[str]) -> int:
    """Progress bars (tqdm; plain lines when stderr is not a terminal) until every job ends.

    Returns 0 if every job COMPLETED, else 1.
    """
    from tqdm import tqdm

    from larsctl.jobs import lifecycle

    tty = sys.stderr.isatty()
    bars: dict[str, tqdm] = {}
    last_line: dict[str, str] = {}
    rows = []
    try:
        for rows, errors in lifecycle.watch(registry, job_ids, note=note):
            for e in errors:
                warn(e)
            for pos, row in enumerate(rows):
                jid, p = row.record.id, row.progress
                text = _bar_text(row)
                if tty:
                    bar = bars.get(jid)
                    if bar is None:  # starts at the current step, so the rate counts only new steps
                        bar = bars[jid] = tqdm(total=p.total_steps, initial=p.step or 0, desc=jid,
                                               position=pos, unit="step", dynamic_ncols=True, leave=True)
                    if p.total_steps and bar.total != p.total_steps:
                        bar.total = p.total_steps
                    bar.set_postfix_str(text, refresh=False)
                    bar.update((p.step or 0) - bar.n)  # negative after a restart from a checkpoint
                else:
                    where = f"step {p.step}/{p.total_steps}" if p.step is not None else "step -"
                    line = f"{jid}: {where}, {text}, ETA {duration(p.eta_seconds)}"
                    if line != last_line.get(jid):
                        click.echo(line, err=True)
                        last_line[jid] = line
    finally:
        for bar in bars.values():
            bar.close()
    return 0 if all(r.state is JobState.COMPLETED for r in rows) else 1


def follow_job(job_id: str) -> int:
    """``submit --follow``: a bar until the job ends, then its final numbers on stdout."""
    from larsctl.jobs.registry import Registry
    from larsctl.results.metrics import read_progress

    registry = Registry()
    code = watch_jobs(registry, [job_id])
    rec = registry.get(job_id)
    p = read_progress(rec.paths.metrics)
    acc = f"{p.val_accuracy:.4f}" if p.val_accuracy is not None else DASH
    top5 = f", top-5 {p.val_top5:.4f}" if p.val_top5 is not None else ""
    click.echo(f"{rec.id}: {rec.state.value} after {p.step if p.step is not None else 0} steps "
               f"(epoch {number(p.epoch, 3)}), restarts {rec.restarts}; "
               f"final validation accuracy {acc}{top5}")
    if code:
        click.echo(f"Error: job {rec.id} ended {rec.state.value}; see `larsctl logs {rec.id}`", err=True)
    return code
