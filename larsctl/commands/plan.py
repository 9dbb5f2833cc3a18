"""``larsctl plan``: GPUs, per-GPU batch, accumulation, LR and warmup for a target batch."""
from __future__ import annotations

import json

import click

from larsctl.commands.options import job_options, resolve_spec
from larsctl.errors import UserError
from larsctl.facts.hardware import CPU
from larsctl.format import duration, power_form, warmup_form, with_form
from larsctl.planning.spec import JobSpec
from larsctl.planning.walltime import job_walltime


def estimate_lines(spec: JobSpec, unit: str) -> list[str]:
    """The estimate: which throughput figure, the step, and the run's parts."""
    plan, est = spec.plan, spec.plan.estimate
    stop = f"max_steps {spec.trainer['max_steps']}" if spec.trainer.get("max_steps") \
        else f"{plan.epochs} epochs"
    return [
        "Estimate",
        f"  throughput {est.throughput}",
        f"  step {est.step_seconds * 1e3:.1f} ms (compute {est.compute_seconds * 1e3:.1f}, "
        f"allreduce {est.allreduce_seconds * 1e3:.2f}), {est.images_per_second:,.0f} img/s",
        f"  epoch {duration(est.epoch_seconds)} ({est.steps_per_epoch} steps and a validation)",
        f"  run {duration(est.total_seconds)} = start-up {duration(est.startup_seconds)} + "
        f"{est.steps} steps {duration(est.train_seconds)} + {est.validations} validations "
        f"{duration(est.validation_seconds)} ({stop}), {est.gpu_hours:,.1f} {unit[:-1]}-hours",
    ]


def render(spec: JobSpec) -> str:
    """The readable plan: each number with the rule that produced it, then the estimate."""
    plan, profile, est = spec.plan, spec.profile, spec.plan.estimate
    unit = "workers" if profile.gpu_type == CPU else "GPUs"
    rows = [
        ("effective batch", f"{plan.effective_batch} = {plan.gpus} {unit} x "
         f"{plan.per_gpu_batch} x {plan.batches_per_allreduce}", "target"),
        ("nodes", f"{plan.nodes} x {plan.gpus_per_node} {unit}", plan.rules["gpus"]),
        ("per-GPU batch", str(plan.per_gpu_batch), plan.rules["per_gpu_batch"]),
        ("batches/allreduce", str(plan.batches_per_allreduce),
         plan.rules["batches_per_allreduce"]),
        ("base LR", with_form(plan.base_lr, power_form, 6), plan.rules["base_lr"]),
        ("warmup epochs", with_form(plan.warmup_epochs, warmup_form, 6),
         plan.rules["warmup_epochs"]),
        ("epsilon", f"{plan.epsilon:g}", plan.rules["epsilon"]),
        ("epochs", str(plan.epochs), f"model {plan.model}, precision {plan.precision}"),
    ]
    lines = [f"Plan {spec.name} on {profile.name} ({profile.scheduler}, {profile.nodes} node(s) x "
             f"{profile.gpus_per_node} {profile.gpu_type}), LR rule {plan.lr_rule}"]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines += [f"  {k.ljust(width)}  {v.ljust(value_width)}  {why}" for k, v, why in rows]
    wt = job_walltime(spec)
    lines += estimate_lines(spec, unit)
    lines += [
        "Walltime",
        f"  request {wt.text} per job, {wt.jobs} job{'s' if wt.jobs > 1 else ''}: {wt.reason}",
        "Assumptions",
    ]
    lines += [f"  - {text}" for text in est.assumptions]
    missing = spec.unset_variables
    if missing:
        lines.append("Unset variables in data paths: " + ", ".join(missing)
                     + " (export them before submitting)")
    return "\n".join(lines)


@click.command()
@click.option("--cluster", "-c", "clusters", multiple=True, default=("local",), show_default=True,
              help="Profile name or path of a profile file; with --from-noise repeat it to compare clusters.")
@click.option("--from-noise", "from_noise", metavar="JOB",
              help="Rank the clusters' shapes by predicted time to JOB's target from its noise scale "
                   "(S(B) = S_min (1 + B_noise/B)) and GPU-hours, and pick one.")
@job_options
@click.option("--json", "as_json", is_flag=True, help="Print the job spec (or the ranking) as JSON.")
@click.option("--show-spec", is_flag=True,
              help="Print the job spec YAML (what job.yaml holds) instead of the table.")
def plan(clusters: tuple[str, ...], from_noise: str | None, as_json: bool, show_spec: bool, **job) -> None:
    """Plan how to reach an effective batch on a cluster; nothing is submitted.

    GPUs x per-GPU batch x batches-per-allreduce equals the target exactly; the
    LR, warmup and epsilon follow the LR rule (LEGW by default) unless the recipe
    or a flag overrides them.  Infeasible requests exit 2 with the reason and a
    suggestion.

    With --from-noise JOB, the batches are the powers of two from B_noise/4 to
    4 x B_noise (at most the training images), B_noise the job's noise scale as
    `larsctl noise` reads it; each is planned on every --cluster from the job's
    job.yaml (LR and warmup by its LR rule).  Steps to the target are
    S(B) = S_min (1 + B_noise/B) with S_min from the job's own run (the steps to
    its stop_at_val_accuracy, else its planned steps, at its batch B0); time is
    S(B) x the planner's step time (throughput measured by jobs on the profile
    where there are any); GPU-hours are time x GPUs.  The pick is the fastest,
    unless another is within 10% of its time at 25% or more fewer GPU-hours.

    \b
    Example:
      larsctl plan --cluster slurm-v100 --target-batch 32768
      larsctl plan --cluster slurm-v100 --recipe jobs/resnet50-lars-32k.yaml --show-spec
      larsctl plan --from-noise demo-20261125-033400-1a2b --cluster local --cluster slurm-v100
    """
    if from_noise is not None:
        given = [name for name, value in job.items() if value not in (None, ())]
        if given or show_spec:
            flags = ", ".join("--" + n.replace("_", "-").replace("trainer-sets", "set")
                              for n in given + (["show_spec"] if show_spec else []))
            raise UserError(f"--from-noise plans from the job's own job.yaml: {flags} cannot be given with it")
        _from_noise(from_noise, clusters, as_json)
        return
    if len(clusters) > 1:
        raise UserError(f"--cluster given {len(clusters)} times ({', '.join(clusters)}): only --from-noise "
                        "compares clusters; give one")
    spec = resolve_spec(clusters[0], **job)
    if as_json:
        click.echo(json.dumps(spec.to_dict(), indent=2))
    elif show_spec:
        click.echo(spec.to_yaml().rstrip())
    else:
        click.echo(render(spec))


def _from_noise(job: str, clusters: tuple[str, ...], as_json: bool) -> None:
    """``--from-noise``: the ranking of larsctl.planning.from_noise for JOB on ``clusters``."""
    from larsctl.commands.noise import load_noise, train_images
    from larsctl.config.profiles import load_profile
    from larsctl.jobs.history import measured_throughput
    from larsctl.planning import from_noise
    from larsctl.results.noise import steps_to_target

    profiles = [load_profile(c) for c in dict.fromkeys(clusters)]  # unknown: exit 2 before reading the job
    name, _, records, spec, summary = load_noise(job)
    if spec is None:
        raise UserError(f"{name}: no job.yaml: --from-noise re-plans the job's model and trainer options "
                        "from it (a plain trainer run has none)")
    try:
        steps, steps_from = steps_to_target(records, spec.trainer.get("stop_at_val_accuracy"))
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from None
    reference = from_noise.Reference(spec.plan.effective_batch, steps, steps_from, summary.recommended,
                                     summary.estimator.name)
    data_size = train_images(summary, spec)
    ranking = from_noise.rank(spec, profiles, reference, data_size, measured_throughput)
    if as_json:
        click.echo(json.dumps({"job": name, "estimator_why": summary.estimator.why,
                               "data_size_from": summary.data_size_from, **ranking.to_dict()}, indent=2))
    else:
        click.echo(from_noise.render(ranking, name))
