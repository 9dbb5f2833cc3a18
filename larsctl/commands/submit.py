"""``larsctl submit`` and ``larsctl script``: turn a plan into a job directory and a running job.

The flow (TorchX's dryrun/schedule split): resolve the JobSpec, render every
chain segment with the scheduler's pure ``dryrun``, and only then create the
job directory, submit and record.  ``--dry-run`` stops after rendering and
touches nothing.
"""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import click

from larsctl.jobs import paths as jobdir
from larsctl.commands.plan import PLAN_OPTIONS
from larsctl.errors import Failure, UserError, one_line
from larsctl.jobs.registry import JobRecord, Registry, new_job_id, save_copy

DEFAULT_MAX_RESTARTS = 3

def job_options(func):
    """The options shared by submit and script: what to run and where."""
    for option in reversed([
        click.option("--cluster", "-c", required=True, help="Cluster profile name or file."),
        click.option("--recipe", "-r", type=click.Path(dir_okay=False, path_type=Path),
                     help="Recipe file (jobs/*.yaml)."),
        click.option("--name", "-n", help="Job name (default: from the recipe)."),
        *PLAN_OPTIONS,
        click.option("--max-steps", type=click.IntRange(min=1),
                     help="Stop the trainer after this many optimizer steps (short test runs)."),
        click.option("--set", "trainer_sets", multiple=True, metavar="KEY=VALUE",
                     help="Set a trainer option in job.yaml (repeatable), e.g. --set image_size=16."),
        click.option("--max-restarts", type=click.IntRange(min=0), default=DEFAULT_MAX_RESTARTS,
                     show_default=True, help="Requeues allowed after a preemption (exit code 75)."),
        click.option("--chain", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Segments chained with afterany dependencies; each resumes from the "
                          "last checkpoint (for runs longer than the walltime)."),
    ]):
        func = option(func)
    return func


def parse_sets(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs; values are read as YAML scalars (16 -> int, true -> bool)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise UserError(f"--set {pair!r}: expected KEY=VALUE with a trainer option name as KEY")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def resolve(cluster: str, recipe: Path | None, name: str | None, plan: dict,
            max_steps: int | None, trainer_sets: tuple[str, ...]):
    """The JobSpec for these options (raises UserError on bad input)."""
    from larsctl.config.profiles import load_profile
    from larsctl.planning.spec import resolve_job

    if recipe is not None and not recipe.is_file():
        raise UserError(f"--recipe {recipe}: no such file")
    if recipe is None and not plan.get("target_batch") and not plan.get("gpus"):
        raise UserError("expected --recipe FILE or --target-batch N (or --gpus N)")
    profile = load_profile(cluster)
    overrides = {k: v for k, v in plan.items() if v is not None}
    if name:
        overrides["name"] = name
    try:
        spec = resolve_job(profile, recipe=recipe, **overrides)
    except ValueError as exc:  # the planner names the bad value
        raise UserError(str(exc)) from None
    extra = parse_sets(trainer_sets)
    if max_steps is not None:
        extra["max_steps"] = max_steps
    if extra:
        spec = replace(spec, trainer={**spec.trainer, **extra})
        check_trainer_options(spec.trainer)
    return spec


def check_trainer_options(options: dict) -> None:
    """Validate the trainer section as the trainer will (torch-free), so a bad --set fails now."""
    from trainer.config import resolve as resolve_trainer
    from trainer.errors import BadInput

    try:
        resolve_trainer(options, {}, source="--set")
    except BadInput as exc:
        raise UserError(str(exc)) from None


def refuse_unset_variables(spec, workdir: Path) -> None:
    """A job that really runs needs every $VAR in its paths set; a dry run shows them as written."""
    from larsctl.planning.spec import variables_in

    missing = set(spec.unset_variables) | variables_in(str(workdir))
    if missing:
        raise UserError(f"environment variable(s) {', '.join(sorted(missing))} used in the job's paths "
                        f"(profile workdir {spec.profile.workdir!r} or the recipe's data dirs) are not set; "
                        "export them first")


def spec_yaml(spec) -> str:
    import yaml

    # JSON round trip: paths and enums become plain strings in job.yaml.
    data = json.loads(json.dumps(spec.to_dict(), default=str))
    return yaml.safe_dump(data, sort_keys=False)


def scheduler_for(profile):
    from larsctl.schedulers import get_scheduler

    return get_scheduler(profile.scheduler)


def render(scheduler, spec, paths, job_id, first_segment, segments, max_restarts):
    """Every segment's BatchRequest (pure)."""
    from larsctl.schedulers import SchedulerError

    try:
        return [scheduler.dryrun(spec, paths.root, job_id=job_id, segment=first_segment + i,
                                 segments=first_segment + segments, max_restarts=max_restarts)
                for i in range(segments)]
    except (SchedulerError, ValueError) as exc:
        raise UserError(f"cannot render the batch script: {one_line(exc)}") from None


def schedule_segments(scheduler, requests, after: str | None = None) -> list[str]:
    """Submit the segments one after the other, each depending on the one before (afterany).

    Returns the scheduler ids submitted; a failure part-way raises Failure
    naming how many segments went in.
    """
    from larsctl.schedulers import SchedulerError

    ids: list[str] = []
    for request in requests:
        try:
            sid = scheduler.schedule(request, after=after, after_kind="afterany")
        except SchedulerError as exc:
            raise _PartialSubmit(ids, f"submitting {request.script_path.name} failed: {one_line(exc)}") from None
        except FileNotFoundError as exc:
            raise _PartialSubmit(ids, f"submitting {request.script_path.name} failed: "
                                      f"{exc.filename or exc}: command not found") from None
        ids.append(sid)
        after = sid
    return ids


class _PartialSubmit(Failure):
    def __init__(self, ids: list[str], message: str):
        super().__init__(message)
        self.ids = ids


@click.command()
@job_options
@click.option("--dry-run", is_flag=True, help="Print the batch script(s) and launch line; write and submit nothing.")
@click.option("--follow", "-f", is_flag=True, help="Show a progress bar until the job ends; exit 0 if it completed.")
def submit(cluster, recipe, name, target_batch, gpus, per_gpu_batch, model, epochs, precision,
           lr_rule, max_steps, trainer_sets, max_restarts, chain, dry_run, follow):
    """Plan a job, write its job directory and submit it; prints the job id.

    \b
    Examples:
      larsctl submit --cluster local --recipe jobs/demo.yaml --follow
      larsctl submit --cluster mycluster --target-batch 32768 --gpus 64 --dry-run
      larsctl submit --cluster mycluster --recipe jobs/demo.yaml --chain 3
    """
    plan = dict(target_batch=target_batch, gpus=gpus, per_gpu_batch=per_gpu_batch, model=model,
                epochs=epochs, precision=precision, lr_rule=lr_rule)
    spec = resolve(cluster, recipe, name, plan, max_steps, trainer_sets)
    scheduler = scheduler_for(spec.profile)
    workdir = spec.profile.expanded_workdir()
    if dry_run:
        job_id = new_job_id(spec.name)
        paths = jobdir.JobPaths(workdir / job_id)
        for i, request in enumerate(render(scheduler, spec, paths, job_id, 0, chain, max_restarts)):
            if i:  # the dependency is added to the submit command once the segment before has an id
                click.echo(f"# after: segment {i} ends (afterany dependency on its scheduler id)")
            click.echo(str(request))
        return
    refuse_unset_variables(spec, workdir)
    record = create_and_submit(spec, scheduler, workdir, chain, max_restarts)
    click.echo(record.id)
    if follow:
        from larsctl.commands.status import follow_job

        raise SystemExit(follow_job(record.id))


def create_and_submit(spec, scheduler, workdir: Path, chain: int, max_restarts: int) -> JobRecord:
    """Claim an id, create the job directory, submit every segment, record it.

    All or nothing until the first segment is in: a failure before that
    removes the directory and the record again.
    """
    registry = Registry()
    profile = spec.profile
    record = registry.claim_id(spec.name, cluster=profile.name, scheduler=profile.scheduler,
                               job_dir="", state="SUBMITTING")
    paths = jobdir.JobPaths(workdir / record.id)
    record = registry.update(record.id, job_dir=str(paths.root))
    ids: list[str] = []
    try:
        requests = render(scheduler, spec, paths, record.id, 0, chain, max_restarts)
        try:
            jobdir.create(paths, {"job.yaml": spec_yaml(spec), "metrics.jsonl": ""})
        except OSError as exc:  # read-only, permission denied, ... (a full disk is already a Failure)
            raise Failure(f"cannot create the job directory {paths.root}: {exc.strerror or exc}") from None
        try:
            ids = schedule_segments(scheduler, requests)
        except _PartialSubmit as exc:
            ids = exc.ids
            if not ids:
                raise
            click.echo(f"Warning: {exc.message}; {len(ids)} of {chain} segments submitted", err=True)
    except BaseException:
        if not ids:
            shutil.rmtree(paths.root, ignore_errors=True)
            try:
                registry.delete(record.id)
            except (Failure, sqlite3.Error):
                pass
        raise
    record = registry.update(record.id, scheduler_ids=ids, state="PENDING")
    save_copy(record)
    return record


@click.command()
@job_options
def script(cluster, recipe, name, target_batch, gpus, per_gpu_batch, model, epochs, precision,
           lr_rule, max_steps, trainer_sets, max_restarts, chain):
    """Write a job directory and its batch script(s) without submitting; prints the script path.

    The script runs on its own (sbatch / qsub / bash); register the job later
    with `larsctl jobs --rebuild DIR` to track it.

    \b
    Example:
      larsctl script --cluster mycluster --recipe jobs/demo.yaml
      sbatch "$(larsctl script --cluster mycluster --recipe jobs/demo.yaml)"
    """
    plan = dict(target_batch=target_batch, gpus=gpus, per_gpu_batch=per_gpu_batch, model=model,
                epochs=epochs, precision=precision, lr_rule=lr_rule)
    spec = resolve(cluster, recipe, name, plan, max_steps, trainer_sets)
    scheduler = scheduler_for(spec.profile)
    job_id = new_job_id(spec.name)
    workdir = spec.profile.expanded_workdir()
    refuse_unset_variables(spec, workdir)
    paths = jobdir.JobPaths(workdir / job_id)
    requests = render(scheduler, spec, paths, job_id, 0, chain, max_restarts)
    files = {"job.yaml": spec_yaml(spec), "metrics.jsonl": ""}
    files.update({r.script_path.name: r.script for r in requests})
    try:
        jobdir.create(paths, files, executable=tuple(r.script_path.name for r in requests))
    except OSError as exc:
        raise Failure(f"cannot create the job directory {paths.root}: {exc.strerror or exc}") from None
    for request in requests:
        click.echo(str(request.script_path))
