"""``larsctl cancel`` and ``larsctl resume``.

Cancel is safe to repeat (TorchX): a finished job is left alone.  Resume
submits the job again into the same job directory; the trainer continues from
its newest valid checkpoint there, so nothing already trained is lost.
"""
from __future__ import annotations

import click

from larsctl.commands.submit import DEFAULT_MAX_RESTARTS
from larsctl.errors import Failure, UserError, one_line
from larsctl.jobs.registry import JobRecord, Registry, save_copy


def spec_from_job_dir(record: JobRecord):
    """The JobSpec saved in ``job.yaml`` (the job is resumed exactly as it was planned)."""
    import yaml

    from larsctl.planning.estimate import Estimate
    from larsctl.planning.planner import Plan
    from larsctl.config.profiles import ClusterProfile
    from larsctl.planning.spec import JobSpec

    path = record.paths.job_yaml
    try:
        data = yaml.safe_load(path.read_text())
        plan = dict(data["plan"])
        estimate = dict(plan.pop("estimate"))
        estimate["assumptions"] = tuple(estimate.get("assumptions", ()))
        recipe = data["job"].get("recipe")
        return JobSpec(name=data["job"]["name"], profile=ClusterProfile.model_validate(data["cluster"]),
                       recipe=recipe, plan=Plan(**plan, estimate=Estimate(**estimate)),
                       trainer=dict(data["trainer"]))
    except FileNotFoundError:
        raise Failure(f"job {record.id}: {path} is missing; cannot resume") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise Failure(f"{path}: cannot be read back as a job spec: {exc}") from None


@click.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
def cancel(job_ids):
    """Cancel jobs (every chain segment); cancelling a finished job does nothing.

    \b
    Example:
      larsctl cancel demo-20250101-120000-ab12
    """
    from larsctl.commands.status import refresh
    from larsctl.schedulers import SchedulerError, get_scheduler

    registry = Registry()
    records = [registry.get(j) for j in job_ids]
    for row in refresh(registry, records)[0]:
        rec = row.record
        if rec.state in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"):
            click.echo(f"{rec.id}: already {rec.state}")
            continue
        scheduler = get_scheduler(rec.scheduler)
        # Last segment first: a waiting segment must not start when the one before it ends.
        for sid in reversed(rec.scheduler_ids):
            try:
                scheduler.cancel(sid)
            except SchedulerError as exc:
                raise Failure(f"cancelling {rec.id} (scheduler id {sid}) failed: {one_line(exc)}") from None
        rec = refresh(registry, [registry.get(rec.id)])[0][0].record
        if rec.state not in ("CANCELLED", "COMPLETED", "FAILED", "TIMEOUT"):
            rec = registry.update(rec.id, state="CANCELLED")
            save_copy(rec)
        click.echo(f"{rec.id}: {rec.state}")


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--max-restarts", type=click.IntRange(min=0), default=DEFAULT_MAX_RESTARTS, show_default=True,
              help="Requeues allowed after a preemption (exit code 75).")
@click.option("--chain", type=click.IntRange(min=1), default=1, show_default=True,
              help="Segments to submit, chained with afterany dependencies.")
def resume(job_id, max_restarts, chain):
    """Submit a stopped job again into its job directory; training continues from its newest checkpoint.

    \b
    Example:
      larsctl cancel demo-20250101-120000-ab12
      larsctl resume demo-20250101-120000-ab12 --chain 2
    """
    from larsctl.commands.status import refresh, require_dir
    from larsctl.commands.submit import render, schedule_segments, scheduler_for, _PartialSubmit

    registry = Registry()
    record = registry.get(job_id)
    require_dir(record)
    record = refresh(registry, [record])[0][0].record
    if record.state in ("PENDING", "RUNNING", "REQUEUED", "SUBMITTING"):
        raise UserError(f"job {job_id} is {record.state}; cancel it first or wait for it to end")
    spec = spec_from_job_dir(record)
    scheduler = scheduler_for(spec.profile)
    requests = render(scheduler, spec, record.paths, record.id, len(record.scheduler_ids), chain,
                      max_restarts)
    try:
        ids = schedule_segments(scheduler, requests)
    except _PartialSubmit as exc:
        if not exc.ids:
            raise
        click.echo(f"Warning: {exc.message}", err=True)
        ids = exc.ids
    record = registry.update(record.id, scheduler_ids=[*record.scheduler_ids, *ids], state="PENDING")
    save_copy(record)
    click.echo(record.id)
