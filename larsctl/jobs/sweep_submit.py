"""Submitting a sweep: first its file, then its jobs, then the scheduler.

``submit`` plans every point (larsctl.jobs.sweeps; a sweep that cannot run is refused before
anything is written), writes sweep.json, creates every point's job (record and job directory,
nothing submitted), then submits them:

* on Slurm and PBS as one job array (``--array=0-N%P``, ``qsub -J 0-N`` with
  ``max_run_subjobs=P``): task i runs the job on line i+1 of the array's tasks file with that
  job's own script, so each task is an ordinary job (its directory, job.yaml, supervision and
  requeue; status, logs, cancel and resume work on it) whose scheduler id is the task's;
* elsewhere (the local profile), and for a single job, as at most P lanes: each job waits for
  the one P places before it.

A submission that stops half way (a full disk, a scheduler that does not answer) leaves
sweep.json saying how far it got; ``resume`` completes it, and grows the LR grid of every batch
whose best LR is at an edge once its jobs have ended (larsctl.jobs.sweep_grid).
"""
from __future__ import annotations

from dataclasses import replace

import click

from larsctl.errors import Failure, one_line
from larsctl.facts import jobdir
from larsctl.facts.sweepdir import SweepPaths
from larsctl.jobs import lifecycle
from larsctl.jobs.registry import JobRecord, Registry, new_job_id
from larsctl.jobs.sweep_file import CREATED, SUBMITTED, SweepFile, index, load
from larsctl.jobs.sweep_grid import SweepDefinition, grown
from larsctl.jobs.sweep_report import measure
from larsctl.jobs.sweeps import Planned, concurrency, job_name, one_shape, plan
from larsctl.schedulers import BatchRequest, SchedulerError, get_scheduler

MAX_RESTARTS = lifecycle.DEFAULT_MAX_RESTARTS


def as_array(profile, count: int) -> bool:
    """Whether ``count`` jobs go in as one job array on ``profile``'s scheduler."""
    return get_scheduler(profile.scheduler).arrays and count > 1


def dry_run(definition: SweepDefinition) -> tuple[list[Planned], BatchRequest | None]:
    """Every point planned, and the array's script as it would be submitted (None: no array)."""
    planned = plan(definition)
    profile = planned[0].spec.profile
    if not as_array(profile, len(planned)):
        return planned, None
    one_shape(planned)
    workdir = profile.expanded_workdir()
    dirs = [workdir / new_job_id(p.spec.name) for p in planned]
    sweep = SweepPaths.of(workdir, new_job_id(f"sweep-{_stem(definition)}"))
    return planned, _render_array(definition, sweep, 0, [p.spec for p in planned], dirs)


def submit(definition: SweepDefinition, warn) -> SweepFile:
    planned = plan(definition)
    profile = planned[0].spec.profile
    if as_array(profile, len(planned)):
        one_shape(planned)
    for p in planned:  # every $VAR its paths use is set: refused before anything is written
        lifecycle.workdir(p.spec)
    sweep_id = new_job_id(f"sweep-{_stem(definition)}")
    sweep = SweepFile(sweep_id, SweepPaths.of(profile.expanded_workdir(), sweep_id), definition)
    sweep = sweep.with_points([p.point for p in planned]).save()
    registry = Registry()
    index(registry, sweep)
    return _complete(registry, sweep, planned, warn)


def resume(sweep_id: str, warn) -> tuple[SweepFile, int]:
    """Complete a sweep (jobs not created or not submitted) and grow its LR grids where the best
    LR of an ended batch is at an edge; (the sweep, how many points were added)."""
    registry = Registry()
    sweep = _adopt(registry, load(registry, sweep_id))
    added = grown(sweep.definition, measure(registry, sweep_id, warn).grids()) if sweep.state == SUBMITTED else []
    if added:
        sweep = sweep.with_points(added).save()
    return _complete(registry, sweep, plan(sweep.definition, sweep.without_job()), warn), len(added)


def running(sweep_id: str, warn) -> bool:
    """Whether any job of the sweep has not ended (a scheduler that does not answer: said, and
    its jobs count as not ended)."""
    registry = Registry()
    rows, errors = lifecycle.refresh(registry, registry.all(sweep=sweep_id))
    for error in errors:
        warn(f"{error}; showing the last known state")
    return bool(errors) or any(not row.state.is_terminal for row in rows)


def _stem(definition: SweepDefinition) -> str:
    from pathlib import Path

    return Path(definition.recipe).stem


def _complete(registry: Registry, sweep: SweepFile, planned: list[Planned], warn) -> SweepFile:
    """Create a job for every point without one, then submit every job not submitted yet."""
    try:
        for p in planned:
            sweep = sweep.with_job(p.point.label, lifecycle.create(p.spec, sweep.id, warn).id).save()
        sweep = replace(sweep, state=CREATED).save()
        jobs = [registry.get(job_id) for job_id in sweep.job_ids()]
        waiting = [r for r in jobs if not r.scheduler_ids]
        if waiting and as_array(lifecycle.spec_of(waiting[0]).profile, len(waiting)):
            sweep = _submit_array(registry, sweep, waiting)
        elif waiting:
            _submit_lanes(registry, sweep, jobs, waiting)
        return replace(sweep, state=SUBMITTED).save()
    except click.ClickException as exc:
        raise Failure(f"{exc.message}; sweep {sweep.id} ({sweep.paths.sweep_json}) is {sweep.state} so far: "
                      f"`larsctl sweep resume {sweep.id}` completes it") from None


def _adopt(registry: Registry, sweep: SweepFile) -> SweepFile:
    """Jobs a stopped submission created but did not write into sweep.json (by name), and array
    tasks it submitted but did not record in their jobs (from sweep.json's arrays)."""
    known = set(sweep.job_ids())
    names = {r.name: r.id for r in registry.all(sweep=sweep.id) if r.id not in known}
    for point in sweep.without_job():
        if job_name(sweep.definition, point) in names:
            sweep = sweep.with_job(point.label, names[job_name(sweep.definition, point)])
    for array in sweep.arrays:
        scheduler = get_scheduler(registry.get(array["jobs"][0]).scheduler)
        for task, job_id in enumerate(array["jobs"]):
            if not registry.get(job_id).scheduler_ids:
                lifecycle.scheduled(registry, job_id, [scheduler.task_id(array["scheduler_id"], task)])
    return sweep.save()


def _render_array(definition: SweepDefinition, sweep: SweepPaths, number: int, specs: list, dirs: list) -> BatchRequest:
    scheduler = get_scheduler(specs[0].profile.scheduler)
    longest = max(specs, key=lambda s: s.plan.walltime.seconds if s.plan.walltime else 0)
    try:
        for spec, job_dir in zip(specs, dirs):  # every task's script renders (a dry run writes none)
            scheduler.dryrun_task(spec, job_dir, job_id=job_dir.name, max_restarts=MAX_RESTARTS)
        return scheduler.dryrun_array(longest, sweep, number, name=sweep.sweep_id, count=len(specs),
                                      max_concurrent=definition.max_concurrent)
    except (SchedulerError, ValueError) as exc:
        raise Failure(f"cannot render the job array: {one_line(exc)}") from None


def _submit_array(registry: Registry, sweep: SweepFile, jobs: list[JobRecord]) -> SweepFile:
    """The jobs as one job array: their task scripts, the tasks file, the array script, then the
    scheduler; sweep.json records the array before the jobs their task ids."""
    scheduler = get_scheduler(jobs[0].scheduler)
    specs = [lifecycle.spec_of(r) for r in jobs]
    for record, spec in zip(jobs, specs):
        scheduler.write(scheduler.dryrun_task(spec, record.paths.root, job_id=record.id, max_restarts=MAX_RESTARTS))
    number = len(sweep.arrays)
    sweep.paths.logs.mkdir(parents=True, exist_ok=True)  # the array's own output (the scheduler opens it)
    jobdir.atomic_write(sweep.paths.tasks(number), "".join(f"{r.job_dir}\n" for r in jobs))
    request = _render_array(sweep.definition, sweep.paths, number, specs, [r.paths.root for r in jobs])
    try:
        array_id = scheduler.schedule(request)
    except SchedulerError as exc:
        raise Failure(f"submitting {request.script_path.name} failed: {one_line(exc)}") from None
    sweep = replace(sweep, arrays=(*sweep.arrays, {"scheduler_id": array_id, "script": str(request.script_path),
                                                   "tasks": str(sweep.paths.tasks(number)),
                                                   "jobs": [r.id for r in jobs]})).save()
    for task, record in enumerate(jobs):
        lifecycle.scheduled(registry, record.id, [scheduler.task_id(array_id, task)])
    return sweep


def _submit_lanes(registry: Registry, sweep: SweepFile, jobs: list[JobRecord], waiting: list[JobRecord]) -> None:
    """Each waiting job as an ordinary job, at most P at once: it waits for the job P places before
    it in the sweep (when that one has not ended)."""
    lanes = concurrency(sweep.definition, [Planned(None, lifecycle.spec_of(r)) for r in waiting])
    order = [r for r in jobs if r.scheduler_ids]
    for record in waiting:
        spec = lifecycle.spec_of(record)
        scheduler = get_scheduler(spec.profile.scheduler)
        before = order[-lanes] if len(order) >= lanes else None
        after = before.scheduler_ids[-1] if before and not before.state.is_terminal else None
        requests = lifecycle.render(scheduler, spec, record.paths, record.id, 0, 1, MAX_RESTARTS)
        order.append(lifecycle.scheduled(registry, record.id,
                                         lifecycle.schedule_segments(scheduler, requests, after=after)))
