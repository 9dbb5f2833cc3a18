"""``larsctl plan``: GPUs, per-GPU batch, accumulation, LR and warmup for a target batch."""
from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from larsctl.planning.planner import LR_RULES, MODELS, PRECISIONS, format_duration, pretty_power, \
    pretty_warmup
from larsctl.planning.spec import JobSpec, resolve_job


def _with_form(value: float, form) -> str:
    """``5.65685 (2^2.5)``; just ``14`` when the form adds nothing."""
    plain, pretty = f"{value:.6g}", form(value)
    return plain if pretty == plain else f"{plain} ({pretty})"


def render(spec: JobSpec) -> str:
    """The readable plan: each number with the rule that produced it, then the estimate."""
    plan, profile, est = spec.plan, spec.profile, spec.plan.estimate
    unit = "workers" if profile.gpu_type == "cpu" else "GPUs"
    rows = [
        ("effective batch", f"{plan.effective_batch} = {plan.gpus} {unit} x "
         f"{plan.per_gpu_batch} x {plan.batches_per_allreduce}", "target"),
        ("nodes", f"{plan.nodes} x {plan.gpus_per_node} {unit}", plan.rules["gpus"]),
        ("per-GPU batch", str(plan.per_gpu_batch), plan.rules["per_gpu_batch"]),
        ("batches/allreduce", str(plan.batches_per_allreduce),
         plan.rules["batches_per_allreduce"]),
        ("base LR", _with_form(plan.base_lr, pretty_power), plan.rules["base_lr"]),
        ("warmup epochs", _with_form(plan.warmup_epochs, pretty_warmup),
         plan.rules["warmup_epochs"]),
        ("epsilon", f"{plan.epsilon:g}", plan.rules["epsilon"]),
        ("epochs", str(plan.epochs), f"model {plan.model}, precision {plan.precision}"),
    ]
    usable = profile.walltime_seconds - profile.signal_margin_seconds
    lines = [f"Plan {spec.name} on {profile.name} ({profile.scheduler}, {profile.nodes} node(s) x "
             f"{profile.gpus_per_node} {profile.gpu_type}), LR rule {plan.lr_rule}"]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines += [f"  {k.ljust(width)}  {v.ljust(value_width)}  {why}" for k, v, why in rows]
    lines += [
        "Estimate",
        f"  step {est.step_seconds * 1e3:.1f} ms (compute {est.compute_seconds * 1e3:.1f}, "
        f"allreduce {est.allreduce_seconds * 1e3:.2f}), {est.images_per_second:,.0f} img/s",
        f"  epoch {format_duration(est.epoch_seconds)}, run {format_duration(est.total_seconds)}"
        f" ({plan.epochs} epochs), {est.gpu_hours:,.1f} {unit[:-1]}-hours",
        f"  jobs {plan.jobs_needed} (walltime {profile.walltime} less "
        f"{profile.signal_margin_seconds}s signal margin = {format_duration(usable)} each)",
        "Assumptions",
    ]
    lines += [f"  - {text}" for text in est.assumptions]
    missing = spec.unset_variables
    if missing:
        lines.append("Unset variables in data paths: " + ", ".join(missing)
                     + " (export them before submitting)")
    return "\n".join(lines)


PLAN_OPTIONS = [
    click.option("--target-batch", type=click.IntRange(min=1), help="Effective batch size."),
    click.option("--gpus", type=click.IntRange(min=1), help="Use exactly this many GPUs (CPU workers on cpu profiles)."),
    click.option("--per-gpu-batch", type=click.IntRange(min=1),
                 help="Per-GPU batch (default: largest that fits, from the table)."),
    click.option("--model", type=click.Choice(MODELS), help="Model (default resnet50)."),
    click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default 90)."),
    click.option("--precision", type=click.Choice(PRECISIONS), help="fp32 (default), fp16, bf16."),
    click.option("--lr-rule", type=click.Choice(LR_RULES), help="LR/warmup rule (default legw)."),
]


def plan_options(func):
    """The planner's flags, shared by plan, submit and script."""
    for option in reversed(PLAN_OPTIONS):
        func = option(func)
    return func


@click.command()
@click.option("--cluster", default="local", show_default=True,
              help="Profile name or path of a profile file.")
@click.option("--recipe", type=click.Path(path_type=Path),
              help="Recipe file (jobs/*.yaml); flags override its values.")
@plan_options
@click.option("--name", help="Job name (default: the recipe's name).")
@click.option("--json", "as_json", is_flag=True, help="Print the job spec as JSON.")
@click.option("--show-spec", is_flag=True,
              help="Print the job spec YAML (what job.yaml holds) instead of the table.")
def plan(cluster: str, recipe: Path | None, target_batch: int | None, gpus: int | None,
         per_gpu_batch: int | None, model: str | None, epochs: int | None,
         precision: str | None, lr_rule: str | None, name: str | None, as_json: bool,
         show_spec: bool) -> None:
    """Plan how to reach an effective batch on a cluster; nothing is submitted.

    GPUs x per-GPU batch x batches-per-allreduce equals the target exactly; the
    LR, warmup and epsilon follow the LR rule (LEGW by default) unless the recipe
    overrides them.  Infeasible requests exit 2 with the reason and a suggestion.

    \b
    Example:
      larsctl plan --cluster slurm-v100 --target-batch 32768
      larsctl plan --cluster slurm-v100 --recipe jobs/resnet50-lars-32k.yaml --show-spec
    """
    spec = resolve_job(cluster, recipe, target_batch=target_batch, gpus=gpus,
                       per_gpu_batch=per_gpu_batch, model=model, epochs=epochs,
                       precision=precision, lr_rule=lr_rule, name=name)
    if as_json:
        click.echo(json.dumps(spec.to_dict(), indent=2))
    elif show_spec:
        click.echo(yaml.safe_dump(spec.to_dict(), sort_keys=False).rstrip())
    else:
        click.echo(render(spec))
