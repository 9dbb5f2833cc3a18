"""``larsctl status`` and ``larsctl jobs``: where each job is, from its scheduler and its metrics.

State comes from the scheduler with one batched ``describe`` per scheduler
(submitit's InfoWatcher idea); finished states are cached in the registry and
never asked again.  Progress (epoch, step, loss, accuracy, images/s, ETA) comes
from the job's ``metrics.jsonl``.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from larsctl.results import progress as progress_mod
from larsctl.errors import Failure, one_line
from larsctl.jobs.registry import JobRecord, Registry, record_from_job_dir, save_copy
from larsctl.schedulers.base import JobInfo, JobState

_ACTIVE = (JobState.PENDING, JobState.RUNNING, JobState.REQUEUED, JobState.PREEMPTED)
_COLOURS = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "REQUEUED": "yellow",
            "FAILED": "red", "TIMEOUT": "red", "CANCELLED": "magenta"}
WATCH_INTERVAL_S = 2.0


def aggregate(states: list[JobState]) -> JobState:
    """One state for a job made of several segments (chain or resumes).

    The first segment still pending or running wins; otherwise the last
    segment's final state (a chain that timed out in segment 0 and completed in
    segment 1 is COMPLETED).
    """
    for state in states:
        if state in _ACTIVE:
            return state
    known = [s for s in states if s is not JobState.UNKNOWN]
    return known[-1] if known else JobState.UNKNOWN


@dataclass
class JobRow:
    record: JobRecord
    progress: progress_mod.Progress
    reason: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.record.state

    def to_dict(self) -> dict:
        return {**self.record.to_dict(), "reason": self.reason, "progress": self.progress.to_dict()}


def refresh(registry: Registry, records: list[JobRecord]) -> tuple[list[JobRow], list[str]]:
    """Ask each scheduler once about all its unfinished jobs; store what changed.

    Returns the rows and the scheduler errors (the rows then keep their last
    known state).
    """
    from larsctl.schedulers import SchedulerError, get_scheduler

    errors: list[str] = []
    infos: dict[str, JobInfo] = {}
    by_scheduler: dict[str, list[str]] = {}
    for rec in records:
        if rec.scheduler_ids and not _final(rec.state):
            by_scheduler.setdefault(rec.scheduler, []).extend(rec.scheduler_ids)
    for name, ids in by_scheduler.items():
        try:
            infos.update(get_scheduler(name).describe(ids))
        except (SchedulerError, ValueError, FileNotFoundError) as exc:
            errors.append(f"{name} scheduler: {one_line(exc)}")
    rows = []
    for rec in records:
        row = JobRow(rec, progress_mod.Progress())
        if not Path(rec.job_dir).is_dir():
            row.warnings.append(f"job {rec.id}: its job directory {rec.job_dir} was deleted")
        else:
            row.progress = progress_mod.read(rec.paths.metrics)
        seg = [infos[s] for s in rec.scheduler_ids if s in infos]
        if seg and len(seg) == len(rec.scheduler_ids):
            state = aggregate([i.state for i in seg])
            restarts = max([rec.paths.read_restarts(), *(i.restarts for i in seg)])
            row.reason = next((i.reason for i in seg if i.state == state and i.reason), "")
            if state.value != rec.state or restarts != rec.restarts:
                rec = registry.update(rec.id, state=state.value, restarts=restarts)
                save_copy(rec)
                row.record = rec
        rows.append(row)
    return rows, errors


def _final(state: str) -> bool:
    return state in JobState.__members__ and JobState(state).is_terminal


def lookup(registry: Registry, job_ids) -> list[JobRecord]:
    return [registry.get(j) for j in job_ids] if job_ids else registry.all()


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def row_cells(row: JobRow) -> list[str]:
    p = row.progress
    frac = p.fraction
    where = "-"
    if p.step is not None:
        where = f"{_fmt(p.epoch, '.2f')}/{p.step}" + (f" ({frac:.0%})" if frac is not None else "")
    return [row.record.id, row.state, str(row.record.restarts), where, _fmt(p.loss, ".4f"),
            _fmt(p.val_accuracy, ".4f"), _fmt(p.images_per_sec, ".1f"),
            progress_mod.format_eta(p.eta_seconds) if row.state == "RUNNING" else "-"]


HEADER = ["JOB", "STATE", "RESTARTS", "EPOCH/STEP", "LOSS", "VAL_ACC", "IMG/S", "ETA"]


def print_table(rows: list[JobRow]) -> None:
    cells = [HEADER] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    for n, line in enumerate(cells):
        parts = []
        for i, cell in enumerate(line):
            text = cell.ljust(widths[i])
            if n and i == 1:  # click.echo drops the colour when stdout is not a terminal
                text = click.style(text, fg=_COLOURS.get(cell))
            parts.append(text)
        click.echo("  ".join(parts).rstrip())


def _report(rows: list[JobRow], errors: list[str]) -> None:
    for row in rows:
        for w in row.warnings:
            click.echo(f"Warning: {w}", err=True)
    for e in errors:
        click.echo(f"Warning: {e}; showing the last known state", err=True)


@click.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB]...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--watch", "-w", is_flag=True, help="Show live progress bars until the jobs end.")
def status(job_ids, as_json, watch):
    """State, restarts and training progress of jobs (all jobs if none given).

    \b
    Examples:
      larsctl status
      larsctl status demo-20250101-120000-ab12 --json
      larsctl status --watch
    """
    registry = Registry()
    records = lookup(registry, job_ids)
    if watch:
        sys.exit(watch_jobs(registry, [r.id for r in records]))
    rows, errors = refresh(registry, records)
    _report(rows, errors)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print_table(rows)
    if errors:
        sys.exit(1)


@click.command()
@click.option("--state", "-s", type=click.Choice([s.value for s in JobState] + ["SUBMITTING"],
                                                   case_sensitive=False), help="Only jobs in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--rebuild", "rebuild_dirs", multiple=True, type=click.Path(path_type=Path),
              metavar="DIR", help="Re-create the record of a job from its job directory (repeatable).")
def jobs(state, as_json, rebuild_dirs):
    """List recorded jobs, or (with --rebuild) re-create lost records from job directories.

    \b
    Examples:
      larsctl jobs
      larsctl jobs --state RUNNING --json
      larsctl jobs --rebuild ~/.local/share/larsctl/runs/demo-20250101-120000-ab12
    """
    registry = Registry()
    for directory in rebuild_dirs:
        record = registry.put(record_from_job_dir(directory))
        save_copy(record)
        click.echo(f"rebuilt {record.id} from {record.job_dir}")
    if rebuild_dirs:
        return
    records = registry.all()
    rows, errors = refresh(registry, records)
    _report(rows, errors)
    if state:
        rows = [r for r in rows if r.state == state.upper()]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        cells = [["JOB", "STATE", "CLUSTER", "CREATED", "DIR"]] + [
            [r.record.id, r.state, r.record.cluster,
             time.strftime("%Y-%m-%d %H:%M", time.localtime(r.record.created)), r.record.job_dir]
            for r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(5)]
        for line in cells:
            click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    if errors:
        sys.exit(1)


def _bar_text(row: JobRow) -> str:
    p = row.progress
    bits = [row.state]
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


def watch_jobs(registry: Registry, job_ids: list[str], interval: float = WATCH_INTERVAL_S) -> int:
    """Progress bars (tqdm; plain lines when stderr is not a terminal) until every job ends.

    Returns 0 if every job COMPLETED, else 1.
    """
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    bars: dict[str, tqdm] = {}
    last_line: dict[str, str] = {}
    try:
        while True:
            rows, errors = refresh(registry, [registry.get(j) for j in job_ids])
            for e in errors:
                click.echo(f"Warning: {e}", err=True)
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
                    eta = progress_mod.format_eta(p.eta_seconds)
                    line = f"{jid}: {where}, {text}, ETA {eta}"
                    if line != last_line.get(jid):
                        click.echo(line, err=True)
                        last_line[jid] = line
            # Done when every job ended, lost its directory or was never submitted (rebuilt
            # from a `larsctl script` directory): nothing more can change for those.
            if all(_final(r.state) or r.warnings or not r.record.scheduler_ids for r in rows):
                return 0 if all(r.state == "COMPLETED" for r in rows) else 1
            time.sleep(interval)
    finally:
        for bar in bars.values():
            bar.close()


def follow_job(job_id: str) -> int:
    """``submit --follow``: a bar until the job ends, then its final numbers on stdout."""
    registry = Registry()
    code = watch_jobs(registry, [job_id])
    rec = registry.get(job_id)
    p = progress_mod.read(rec.paths.metrics)
    acc = f"{p.val_accuracy:.4f}" if p.val_accuracy is not None else "-"
    top5 = f", top-5 {p.val_top5:.4f}" if p.val_top5 is not None else ""
    click.echo(f"{rec.id}: {rec.state} after {p.step if p.step is not None else 0} steps "
               f"(epoch {_fmt(p.epoch, '.2f')}), restarts {rec.restarts}; "
               f"final validation accuracy {acc}{top5}")
    if code:
        click.echo(f"Error: job {rec.id} ended {rec.state}; see `larsctl logs {rec.id}`", err=True)
    return code


def require_dir(rec: JobRecord) -> None:
    """A clear error when the job directory was removed under a record."""
    if not Path(rec.job_dir).is_dir():
        raise Failure(f"job {rec.id}: its job directory {rec.job_dir} was deleted "
                      f"(the record remains in {Registry().path})")

