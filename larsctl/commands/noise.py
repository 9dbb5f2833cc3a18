"""``larsctl noise``: the gradient noise scale a job measured, and the batch it recommends."""
from __future__ import annotations

import json
import click

from larsctl.errors import UserError


@click.command()
@click.argument("job", metavar="JOB")
@click.option("--cluster", "-c", help="Also plan the recommended batch on this cluster profile "
                                      "(GPUs, per-GPU batch, accumulation, LR, time, GPU-hours).")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def noise(job, cluster, as_json):
    """B_simple over a job's training, the effective batch it recommends, and the trade-off.

    The trainer measures the gradient noise scale on every step (McCandlish et al.
    2018); this shows it early, per quarter of training and last, recommends its
    average over training progress as the effective batch, and gives the steps and
    examples that 0.5x, 1x and 2x that batch cost relative to the minimum.  For a
    LARS or LAMB job it reads the trust-ratio-preconditioned noise scale
    (noise_scale_lars) where the run logged it, else the plain-SGD one, and says
    which.  A run that has measured fewer steps than one time constant of the
    trainer's moving averages is refused.  The recommended batch is the nearest
    power of two, at most the training images; with --cluster it is planned from
    the job's job.yaml, the LR and warmup re-planned by the job's LR rule.  JOB is
    a job id or a job directory.

    \b
    Example:
      larsctl noise demo-20261125-033400-1a2b
      larsctl noise demo-20261125-033400-1a2b --cluster slurm-v100 --json
    """
    from larsctl.config.profiles import load_profile
    from larsctl.results import noise as noise_mod

    profile = load_profile(cluster) if cluster else None  # an unknown profile: exit 2 before any output
    name, _, _, spec, summary = load_noise(job)
    tradeoffs = noise_mod.around(summary)
    plan = _plan(spec, profile, summary) if profile is not None else None
    if as_json:
        data = noise_mod.to_dict(summary, tradeoffs)
        data["job"] = name
        if plan is not None:
            data["plan"] = plan[1].to_dict() if plan[1] is not None else {"error": plan[2]}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(noise_mod.render(summary, tradeoffs, job=name))
    if plan is not None:
        batch, new, error = plan
        click.echo("")
        if new is None:
            click.echo(f"Plan for an effective batch of {batch} on {profile.name}: {error}")
        else:
            from larsctl.commands.plan import render as render_plan

            click.echo(f"Plan for the recommended batch, {summary.batch.batch}:")
            click.echo(render_plan(new))


def load_noise(job: str):
    """(name, job directory, records, JobSpec or None, checked NoiseSummary) of JOB; UserError
    (exit 2, naming the job) when it has no noise scale or too few measured steps."""
    from larsctl.commands.report import resolve
    from larsctl.facts.jobdir import JobPaths
    from larsctl.planning.spec import JobSpec
    from larsctl.results import noise as noise_mod
    from larsctl.results.metrics import read_records
    from larsctl.results.trainer_config import plain_run_config
    from trainer.config import BY_NAME as TRAINER_OPTIONS

    name, directory = resolve(job)
    paths = JobPaths(directory)
    records = read_records(paths.metrics)
    try:
        spec = JobSpec.read(paths.job_yaml)
    except FileNotFoundError:  # a trainer run without larsctl: its checkpoints carry its config
        spec = None
    config = spec.trainer if spec is not None else plain_run_config(directory, records)
    # job.yaml holds base_op only when the recipe or --set gave it; the trainer's default otherwise
    optimizer = config.get("base_op", TRAINER_OPTIONS["base_op"].default) if spec is not None or config else None
    try:
        summary = noise_mod.noise_summary(records, optimizer)
        noise_mod.check_measured(summary)
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from None
    return name, directory, records, spec, summary


def train_images(summary, spec) -> int:
    """The training images N: the summary's (from metrics.jsonl), else at least the job.yaml plan's
    steps per epoch x effective batch."""
    return summary.data_size or spec.plan.estimate.steps_per_epoch * spec.plan.effective_batch


def _plan(spec, profile, summary):
    """(batch, JobSpec or None, why not): the job at the recommended batch on ``profile``, from its
    job.yaml (larsctl.planning.from_noise.at_batch); without one, the planner's defaults."""
    from larsctl.jobs.history import measured_throughput
    from larsctl.planning.from_noise import at_batch
    from larsctl.planning.spec import resolve_job

    batch = summary.batch.batch
    try:
        if spec is None:
            return batch, resolve_job(profile, None, target_batch=batch, measured=measured_throughput), None
        return batch, at_batch(spec, profile, batch, train_images(summary, spec), measured_throughput), None
    except UserError as exc:
        return batch, None, exc.message
