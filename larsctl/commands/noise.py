"""``larsctl noise``: the gradient noise scale a job measured, and the batch it recommends."""
from __future__ import annotations

import json
import math

import click

from larsctl.errors import UserError


@click.command()
@click.argument("job", metavar="JOB")
@click.option("--cluster", "-c", help="Also plan the recommended batch on this cluster profile "
                                      "(GPUs, per-GPU batch, accumulation, time, GPU-hours).")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def noise(job, cluster, as_json):
    """B_simple over a job's training, the effective batch it recommends, and the trade-off.

    The trainer measures the gradient noise scale on every step (McCandlish et al.
    2018); this shows it early, per quarter of training and last, recommends its
    average over training progress as the effective batch, and gives the steps and
    examples that 0.5x, 1x and 2x that batch cost relative to the minimum.  JOB is a
    job id or a job directory.

    \b
    Example:
      larsctl noise demo-20261125-033400-1a2b
      larsctl noise demo-20261125-033400-1a2b --cluster slurm-v100 --json
    """
    from larsctl.commands.report import resolve
    from larsctl.facts.jobdir import JobPaths
    from larsctl.results import noise as noise_mod
    from larsctl.results.metrics import read_records

    name, directory = resolve(job)
    try:
        summary = noise_mod.noise_summary(read_records(JobPaths(directory).metrics))
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from None
    tradeoffs = noise_mod.around(summary)
    plan = _plan(directory, cluster, summary.recommended) if cluster else None
    if as_json:
        data = noise_mod.to_dict(summary, tradeoffs)
        data["job"] = name
        if plan is not None:
            data["plan"] = plan[1].to_dict() if plan[1] is not None else {"error": plan[2]}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(noise_mod.render(summary, tradeoffs, job=name))
    if plan is not None:
        batch, spec, error = plan
        click.echo("")
        if spec is None:
            click.echo(f"Plan for an effective batch of {batch} on {cluster}: {error}")
        else:
            from larsctl.commands.plan import render as render_plan

            click.echo(f"Plan for the recommended batch, rounded to {batch}:")
            click.echo(render_plan(spec))


def _plan(directory, cluster: str, recommended: float):
    """(batch, JobSpec or None, why not): the job's own recipe at the recommended batch,
    rounded to a power of two (what the planner's per-GPU batches divide)."""
    from larsctl.facts.jobdir import JobPaths
    from larsctl.jobs.history import measured_throughput
    from larsctl.planning.spec import JobSpec, resolve_job

    batch = 2 ** max(0, round(math.log2(max(1.0, recommended))))
    try:
        job = JobSpec.read(JobPaths(directory).job_yaml)
        same = dict(model=job.plan.model, precision=job.plan.precision, epochs=job.plan.epochs)
        recipe = job.recipe
    except FileNotFoundError:  # a trainer run without larsctl: the planner's defaults
        same, recipe = {}, None
    try:
        spec = resolve_job(cluster, recipe, target_batch=batch, measured=measured_throughput, **same)
    except UserError as exc:
        return batch, None, exc.message
    return batch, spec, None
