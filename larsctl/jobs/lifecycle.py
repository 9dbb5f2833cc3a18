"""The life of a job once planned: submit, refresh, cancel, resume, watch.

The commands are Click code around these functions.  The flow (TorchX's
dryrun/schedule split): render every segment with the scheduler's pure
``dryrun`` first, then create the job directory, submit and record; a job that
cannot run is refused before anything is written.

State comes from the scheduler with one batched ``describe`` per scheduler
(submitit's InfoWatcher idea); finished states are cached in the registry and
never asked again.  Progress comes from the job's metrics.jsonl, read locally on
every refresh.
"""
from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from larsctl.config.env import variables_in
from larsctl.errors import Failure, UserError, one_line
from larsctl.facts import jobdir
from larsctl.facts.states import JobState, aggregate
from larsctl.jobs.registry import JobRecord, Registry, new_job_id, save_copy
from larsctl.jobs.tracking import create_run as create_tracker_run
from larsctl.planning.spec import JobSpec
from larsctl.results.metrics import Progress, read_progress
from larsctl.results.segments import Segment, job_segments
from larsctl.schedulers import (
    BatchRequest,
    JobInfo,
    Scheduler,
    SchedulerError,
    get_scheduler,
)
from trainer.supervisor.causes import Cause

DEFAULT_MAX_RESTARTS = 3
# Scheduler polling while watching: 2 s, growing while nothing changes, at most 60 s
# (submitit's InfoWatcher); metrics.jsonl is read every METRICS_INTERVAL_S.
POLL_MIN_S, POLL_MAX_S, POLL_GROWTH = 2.0, 60.0, 1.5
METRICS_INTERVAL_S = 1.0

Warn = Callable[[str], None]


class PartialSubmit(Failure):
    """Some segments went in, then one failed (``ids``: the ones submitted)."""

    def __init__(self, ids: list[str], message: str):
        super().__init__(message)
        self.ids = ids


@dataclass
class JobRow:
    """A job as status shows it: its record, its progress, its segments and what the scheduler said."""

    record: JobRecord
    progress: Progress
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    @property
    def state(self) -> JobState:
        return self.record.state

    @property
    def settled(self) -> bool:
        """Nothing more can change: ended, lost its directory, or never submitted."""
        return self.state.is_terminal or bool(self.warnings) or not self.record.scheduler_ids

    def to_dict(self) -> dict:
        return {**self.record.to_dict(), "reason": self.reason, "progress": self.progress.to_dict(),
                "segments": [s.to_dict() for s in self.segments]}


# -- planning a submission (pure until schedule) ----------------------------------------
def render(scheduler: Scheduler, spec: JobSpec, paths: jobdir.JobPaths, job_id: str, first_segment: int,
           segments: int, max_restarts: int) -> list[BatchRequest]:
    """Every segment's BatchRequest (pure)."""
    try:
        return [scheduler.dryrun(spec, paths.root, job_id=job_id, segment=first_segment + i,
                                 segments=first_segment + segments, max_restarts=max_restarts)
                for i in range(segments)]
    except (SchedulerError, ValueError) as exc:
        raise UserError(f"cannot render the batch script: {one_line(exc)}") from None


def _workdir(spec: JobSpec, dry_run: bool) -> Path:
    """The profile's workdir; a job that really runs needs every $VAR in its paths set."""
    workdir = spec.profile.expanded_workdir()
    missing = set(spec.unset_variables) | variables_in(str(workdir))
    if missing and not dry_run:
        raise UserError(f"environment variable(s) {', '.join(sorted(missing))} used in the job's paths "
                        f"(profile workdir {spec.profile.workdir!r} or the recipe's data dirs) are not set; "
                        "export them first")
    return workdir


def workdir(spec: JobSpec) -> Path:
    """Where a job that really runs goes (UserError naming any $VAR of its paths that is not set)."""
    return _workdir(spec, dry_run=False)


def unset_variables(spec: JobSpec) -> list[str]:
    """$VARS the job's paths use that are not set here (a dry run shows them as written)."""
    return sorted(set(spec.unset_variables) | variables_in(str(spec.profile.expanded_workdir())))


def dry_run(spec: JobSpec, chain: int, max_restarts: int) -> list[BatchRequest]:
    """What ``submit`` would write and run, touching nothing."""
    spec.check_runnable()
    job_id = new_job_id(spec.name)
    paths = jobdir.JobPaths(_workdir(spec, dry_run=True) / job_id)
    return render(get_scheduler(spec.profile.scheduler), spec, paths, job_id, 0, chain, max_restarts)


def _create(paths: jobdir.JobPaths, spec: JobSpec, requests: list[BatchRequest] = ()) -> None:
    files = {paths.job_yaml: spec.to_yaml(), paths.metrics: ""}
    files.update({r.script_path: r.script for r in requests})
    try:
        jobdir.create(paths, files, executable=tuple(r.script_path for r in requests))
    except OSError as exc:  # read-only, permission denied, ... (a full disk is already a Failure)
        raise Failure(f"cannot create the job directory {paths.root}: {exc.strerror or exc}") from None


def write_scripts(spec: JobSpec, chain: int, max_restarts: int) -> list[Path]:
    """``larsctl script``: a job directory with its batch scripts, nothing submitted."""
    spec.check_runnable()
    job_id = new_job_id(spec.name)
    paths = jobdir.JobPaths(_workdir(spec, dry_run=False) / job_id)
    requests = render(get_scheduler(spec.profile.scheduler), spec, paths, job_id, 0, chain, max_restarts)
    _create(paths, spec, requests)
    return [r.script_path for r in requests]


def schedule_segments(scheduler: Scheduler, requests: list[BatchRequest], after: str | None = None) -> list[str]:
    """Submit the segments one after the other, each depending on the one before (afterany);
    the first waits for ``after`` when given.

    A failure part-way raises :class:`PartialSubmit` naming how many went in.
    """
    ids: list[str] = []
    for request in requests:
        try:
            sid = scheduler.schedule(request, after=after, after_kind="afterany")
        except SchedulerError as exc:
            raise PartialSubmit(ids, f"submitting {request.script_path.name} failed: {one_line(exc)}") from None
        except FileNotFoundError as exc:
            raise PartialSubmit(ids, f"submitting {request.script_path.name} failed: "
                                     f"{exc.filename or exc}: command not found") from None
        ids.append(sid)
        after = sid
    return ids


def submit(spec: JobSpec, chain: int, max_restarts: int, warn: Warn, sweep: str = "",
           after: str | None = None) -> JobRecord:
    """Claim an id, create the job directory, submit every segment, record it (as a point of
    ``sweep`` when given; starting once scheduler job ``after`` has ended, when given).

    All or nothing until the first segment is in: a failure before that
    removes the directory and the record again.
    """
    spec.check_runnable()
    workdir = _workdir(spec, dry_run=False)
    scheduler = get_scheduler(spec.profile.scheduler)
    registry = Registry()
    profile = spec.profile
    record = registry.claim_id(spec.name, cluster=profile.name, scheduler=profile.scheduler,
                               job_dir="", state=JobState.SUBMITTING, sweep=sweep)
    paths = jobdir.JobPaths(workdir / record.id)
    record = registry.update(record.id, job_dir=str(paths.root))
    ids: list[str] = []
    try:
        requests = render(scheduler, spec, paths, record.id, 0, chain, max_restarts)
        _create(paths, spec)
        create_tracker_run(spec, paths.root, sweep, warn)
        try:
            ids = schedule_segments(scheduler, requests, after=after)
        except PartialSubmit as exc:
            ids = exc.ids
            if not ids:
                raise
            warn(f"{exc.message}; {len(ids)} of {chain} segments submitted")
    except BaseException:
        if not ids:
            _forget(registry, record.id, paths)
        raise
    record = registry.update(record.id, scheduler_ids=ids, state=JobState.PENDING)
    save_copy(record)
    return record


def create(spec: JobSpec, sweep: str, warn: Warn) -> JobRecord:
    """A point of ``sweep``: its record (SUBMITTING, no scheduler id), its job directory with its
    job.yaml and its tracker run, submitting nothing: a sweep creates its jobs before it submits
    any (``scheduled`` records the submission).  Nothing is left behind when it fails."""
    spec.check_runnable()
    workdir = _workdir(spec, dry_run=False)
    registry = Registry()
    record = registry.claim_id(spec.name, cluster=spec.profile.name, scheduler=spec.profile.scheduler,
                               job_dir="", state=JobState.SUBMITTING, sweep=sweep)
    paths = jobdir.JobPaths(workdir / record.id)
    try:
        _create(paths, spec)
        record = registry.update(record.id, job_dir=str(paths.root))
        create_tracker_run(spec, paths.root, sweep, warn)
        save_copy(record)
    except BaseException:
        _forget(registry, record.id, paths)
        raise
    return record


def _forget(registry: Registry, job_id: str, paths: jobdir.JobPaths) -> None:
    """A job that failed before anything was submitted leaves nothing: its directory and record go."""
    shutil.rmtree(paths.root, ignore_errors=True)
    try:
        registry.delete(job_id)
    except (Failure, sqlite3.Error):
        pass


def scheduled(registry: Registry, job_id: str, ids: list[str]) -> JobRecord:
    """A created job (``create``) was submitted under scheduler ids ``ids``."""
    record = registry.update(job_id, scheduler_ids=ids, state=JobState.PENDING)
    save_copy(record)
    return record


# -- where jobs are ----------------------------------------------------------------------
def spec_of(record: JobRecord) -> JobSpec:
    """The JobSpec saved in the job's job.yaml (a job is resumed exactly as it was planned)."""
    path = record.paths.job_yaml
    try:
        return JobSpec.read(path)
    except FileNotFoundError:
        raise Failure(f"job {record.id}: {path} is missing") from None
    except UserError as exc:
        raise Failure(exc.message) from None


def require_dir(record: JobRecord) -> None:
    """A clear error when the job directory was removed under a record."""
    if not Path(record.job_dir).is_dir():
        raise Failure(f"job {record.id}: its job directory {record.job_dir} was deleted")


def _adopt_resubmissions(registry: Registry, record: JobRecord) -> JobRecord:
    """Scheduler ids the job's own script submitted it as (PBS requeue) become part of the job,
    which is then waiting again, whatever the scheduler said of the run that resubmitted it."""
    new = [sid for sid in record.paths.resubmitted_ids() if sid not in record.scheduler_ids]
    if not new:
        return record
    record = registry.update(record.id, scheduler_ids=[*record.scheduler_ids, *new], state=JobState.PENDING)
    save_copy(record)
    return record


def refresh(registry: Registry, records: list[JobRecord], ask_scheduler: bool = True,
            adapt: Warn | None = None) -> tuple[list[JobRow], list[str]]:
    """Each job's progress (from metrics.jsonl) and, with ``ask_scheduler``, its state:
    one ``describe`` per scheduler for all unfinished jobs; what changed is stored.

    ``adapt``: apply the node policies (larsctl.jobs.nodepolicy) to waiting jobs, saying what was
    done through this callable.
    Returns the rows and the scheduler errors (the rows then keep their last known state; a
    scheduler that does not answer is remembered with the time it stopped answering, so every
    command says since when, and nothing is marked failed meanwhile).
    """
    errors: list[str] = []
    records = [_adopt_resubmissions(registry, r) if Path(r.job_dir).is_dir() else r for r in records]
    infos: dict[str, JobInfo] = {}
    if ask_scheduler:
        by_scheduler: dict[str, list[str]] = {}
        for rec in records:
            if rec.scheduler_ids and not rec.state.is_terminal:
                by_scheduler.setdefault(rec.scheduler, []).extend(rec.scheduler_ids)
        for name, ids in by_scheduler.items():
            try:
                infos.update(get_scheduler(name).describe(ids))
            except (SchedulerError, ValueError, FileNotFoundError) as exc:
                since = registry.scheduler_failing(name, one_line(exc))
                errors.append(f"{name} scheduler not answering since "
                              f"{time.strftime('%H:%M', time.localtime(since))}: {one_line(exc)}")
            else:
                registry.scheduler_answered(name)
    rows = _rows(registry, records, infos)
    if adapt is not None and ask_scheduler and not errors:
        from larsctl.jobs.nodepolicy import adapt as adapt_nodes

        moved = adapt_nodes(registry, rows, adapt)
        for text in moved:
            adapt(text)
        if moved:  # show them as they are now
            rows = _rows(registry, [registry.get(r.record.id) for r in rows], {})
    return rows, errors


def _rows(registry: Registry, records: list[JobRecord], infos: dict[str, JobInfo]) -> list[JobRow]:
    rows = []
    for rec in records:
        row = JobRow(rec, Progress())
        if not Path(rec.job_dir).is_dir():
            row.warnings.append(f"job {rec.id}: its job directory {rec.job_dir} was deleted")
        else:
            row.progress = read_progress(rec.paths.metrics)
        seg = [infos[s] for s in rec.scheduler_ids if s in infos]
        state, restarts = rec.state, rec.restarts
        if not rec.scheduler_ids and state is JobState.UNKNOWN:
            row.reason = ("no scheduler id: rebuilt from its job directory, where no segment ever started "
                          "(written by `larsctl script` and never submitted, or its job.json was lost before)")
        if seg and len(seg) == len(rec.scheduler_ids):
            state = aggregate([i.state for i in seg])
            restarts = max([rec.paths.read_restarts(), *(i.restarts for i in seg)])
            row.reason = next((i.reason for i in seg if i.state == state and i.reason), "")
        if not row.warnings:
            newest = seg[-1] if seg else None
            told = (Cause(newest.cause), newest.reason or newest.cause) if newest and newest.cause else None
            running = state in (JobState.RUNNING, JobState.SUBMITTING) or (state.is_active and not seg)
            row.segments = job_segments(rec.job_dir, running=running, scheduler=told)
            state = _state_by_cause(state, row.segments)
        if state != rec.state or restarts != rec.restarts:
            rec = registry.update(rec.id, state=state, restarts=restarts)
            save_copy(rec)
            row.record = rec
        rows.append(row)
    return rows


# A job that ended takes the state its last segment's cause gives (Slurm says FAILED of a
# script that exited 143 after a cancel; the segment says cancelled).
_STATE_OF_CAUSE = {Cause.COMPLETED: JobState.COMPLETED, Cause.CANCELLED: JobState.CANCELLED,
                   Cause.WALLTIME: JobState.TIMEOUT, Cause.PREEMPTED: JobState.PREEMPTED}


def _state_by_cause(state: JobState, segments: list[Segment]) -> JobState:
    """Only where the scheduler's word is the coarse one (COMPLETED/FAILED of the script's exit)."""
    if state not in (JobState.COMPLETED, JobState.FAILED) or not segments or segments[-1].cause is None \
            or segments[-1].action == "resume":
        return state
    return _STATE_OF_CAUSE.get(Cause(segments[-1].cause), JobState.FAILED)


def watch(registry: Registry, job_ids: list[str], sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic,
          note: Warn | None = None) -> Iterator[tuple[list[JobRow], list[str]]]:
    """Rows every METRICS_INTERVAL_S until every job is settled (the last rows included).

    The scheduler is asked at POLL_MIN_S, then less often while nothing changes (up
    to POLL_MAX_S); a change of any job's state brings the interval back down.
    """
    interval, next_poll = POLL_MIN_S, 0.0
    last: dict[str, JobState] = {}
    while True:
        now = clock()
        ask = now >= next_poll
        rows, errors = refresh(registry, [registry.get(j) for j in job_ids], ask_scheduler=ask, adapt=note)
        if ask:
            states = {r.record.id: r.state for r in rows}
            interval = POLL_MIN_S if states != last else min(POLL_MAX_S, interval * POLL_GROWTH)
            last, next_poll = states, now + interval
        yield rows, errors
        if all(r.settled for r in rows):
            return
        sleep(METRICS_INTERVAL_S)


# -- changing them -------------------------------------------------------------------------
def cancel(registry: Registry, job_id: str) -> tuple[JobRecord, bool]:
    """Cancel every segment, last first; (record, whether it had already ended).

    Safe to repeat (TorchX): an ended job is left alone.
    """
    rec = refresh(registry, [registry.get(job_id)])[0][0].record
    if rec.state.is_terminal:
        return rec, True
    scheduler = get_scheduler(rec.scheduler)
    # Last segment first: a waiting segment must not start when the one before it ends.
    for sid in reversed(rec.scheduler_ids):
        try:
            scheduler.cancel(sid)
        except SchedulerError as exc:
            raise Failure(f"cancelling {rec.id} (scheduler id {sid}) failed: {one_line(exc)}") from None
    row = refresh(registry, [registry.get(rec.id)])[0][0]
    rec = row.record
    # Some schedulers report a killed job as finished (Torque's qstat: C, no exit
    # status), or as failed when the batch script, told to stop, exited by itself with the
    # launcher's code (PBS: Exit_status 1): unless the trainer said it was done, or the
    # segment's own record (action set: not derived from the scheduler's word) says it ended
    # of another cause before the cancel reached it, what larsctl killed is CANCELLED.
    last = row.segments[-1] if row.segments else None
    own_end = last is not None and last.action is not None and last.cause != Cause.CANCELLED.value
    if not rec.state.is_terminal or (rec.state is JobState.COMPLETED and not row.progress.done) \
            or (rec.state is JobState.FAILED and not own_end):
        rec = registry.update(rec.id, state=JobState.CANCELLED)
        save_copy(rec)
    return rec, False


def resume(registry: Registry, job_id: str, chain: int, max_restarts: int, warn: Warn, *,
           gpus: int | None = None, cluster: str | None = None, force: bool = False,
           dry_run: bool = False) -> JobRecord | tuple[JobSpec, JobSpec, list[BatchRequest]]:
    """Submit a stopped job again into its job directory; the trainer continues from its
    newest valid checkpoint there.  ``gpus``/``cluster``: on another shape or cluster, re-planned
    keeping the effective batch, LR schedule, data order and the job's identity.  ``force``:
    cancel it first if it still runs.  ``dry_run``: (old spec, new spec, requests), nothing done.
    Refusals are one line (UserError), before anything is written or submitted."""
    from larsctl.config.profiles import load_profile
    from larsctl.jobs.history import measured_throughput
    from larsctl.jobs.reshape import check_reachable
    from larsctl.planning.replan import replan

    record = registry.get(job_id)
    require_dir(record)
    row = refresh(registry, [record])[0][0]
    record = row.record
    if record.state.is_active and not (force and not dry_run):
        raise UserError(f"job {job_id} is {record.state.value}; resume it after it stops, or with --force "
                        "(which cancels it first)")
    if record.state is JobState.COMPLETED:
        last = row.segments[-1].detail if row.segments else f"its trainer finished at step {row.progress.step}"
        raise UserError(f"job {job_id} is COMPLETED ({last}); there is nothing to resume")
    old = spec_of(record)
    spec = old
    if gpus is not None or cluster is not None:
        profile = load_profile(cluster) if cluster else old.profile
        p = old.plan
        spec = replan(old, profile, gpus, measured_throughput(profile.name, p.model,
                                                              old.trainer.get("image_size", 224), p.precision))
        check_reachable(record.id, record.paths.root, spec)
        if spec.profile is not old.profile:
            _workdir(spec, dry_run)  # the new profile's $VARS must be set for a real resume
    scheduler = get_scheduler(spec.profile.scheduler)
    first = record.paths.segments(scheduler.name)
    requests = render(scheduler, spec, record.paths, record.id, first, chain, max_restarts)
    if dry_run:
        return old, spec, requests
    if record.state.is_active:
        record = cancel(registry, record.id)[0]
    moved = spec.profile.scheduler != old.profile.scheduler
    if spec is not old:  # the spec this job ran with so far stays beside it
        jobdir.atomic_write(record.paths.root / f"job.before-segment-{len(row.segments)}.yaml",
                            record.paths.job_yaml.read_text())
        jobdir.atomic_write(record.paths.job_yaml, spec.to_yaml())
    if moved:
        record = registry.update(record.id, cluster=spec.profile.name, scheduler=spec.profile.scheduler,
                                 previous_ids=[*record.previous_ids,
                                               *([record.scheduler, sid] for sid in record.scheduler_ids)],
                                 scheduler_ids=[])
    elif spec.profile.name != record.cluster:
        record = registry.update(record.id, cluster=spec.profile.name)
    try:
        ids = schedule_segments(scheduler, requests)
    except PartialSubmit as exc:
        if not exc.ids:
            raise
        warn(exc.message)
        ids = exc.ids
    record = registry.update(record.id, scheduler_ids=[*record.scheduler_ids, *ids], state=JobState.PENDING)
    save_copy(record)
    return record
