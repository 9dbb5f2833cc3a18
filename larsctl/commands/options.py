"""The options that say what a job is, shared by plan, submit and script."""
from __future__ import annotations

import re
from pathlib import Path

import click

from larsctl.errors import UserError
from larsctl.facts.hardware import MODELS, PRECISIONS
from larsctl.facts.rules import LR_RULES

_OPTIONS = [
    click.option("--recipe", "-r", type=click.Path(dir_okay=False, path_type=Path),
                 help="Recipe file (jobs/*.yaml); the flags below override its values."),
    click.option("--name", "-n", help="Job name (default: the recipe's name)."),
    click.option("--target-batch", type=click.IntRange(min=1), help="Effective batch size."),
    click.option("--gpus", type=click.IntRange(min=1),
                 help="Use exactly this many GPUs (CPU workers on cpu profiles)."),
    click.option("--per-gpu-batch", type=click.IntRange(min=1),
                 help="Per-GPU batch (default: largest that fits, from the table)."),
    click.option("--model", type=click.Choice(tuple(MODELS)), help="Model (default resnet50)."),
    click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default 90)."),
    click.option("--precision", type=click.Choice(PRECISIONS), help="fp32 (default), fp16, bf16."),
    click.option("--lr-rule", type=click.Choice(LR_RULES), help="LR/warmup rule (default legw)."),
    click.option("--base-lr", type=click.FloatRange(min=0, min_open=True),
                 help="The final learning rate, instead of the LR rule's."),
    click.option("--warmup-epochs", type=click.FloatRange(min=0),
                 help="Warmup length in epochs, instead of the LR rule's."),
    click.option("--epsilon", type=click.FloatRange(min=0), help="LARS epsilon, instead of the LR rule's."),
    click.option("--max-steps", type=click.IntRange(min=1),
                 help="Stop the trainer after this many optimizer steps (short test runs)."),
    click.option("--set", "trainer_sets", multiple=True, metavar="KEY=VALUE",
                 help="A trainer option for the job (repeatable), e.g. --set image_size=16; "
                      "what the planner decides has its own flag."),
]


def job_options(func):
    """--recipe, --name, the planner's flags, --max-steps and --set."""
    for option in reversed(_OPTIONS):
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


def fault_overrides(on_fault: tuple[str, ...], bound_s: int | None, crash_resumes: int | None) -> dict:
    """``--on-fault CAUSE=ACTION``..., ``--fault-bound``, ``--crash-resumes`` as a ``faults:`` mapping."""
    from trainer.supervisor.causes import SettingsError, parse_rule

    out: dict = {}
    for rule in on_fault:
        try:
            cause, action = parse_rule(rule, f"--on-fault {rule}")
        except SettingsError as exc:
            raise UserError(str(exc)) from None
        out.setdefault("policy", {})[cause.value] = action.value
    if bound_s is not None:
        out["bound_s"] = bound_s
    if crash_resumes is not None:
        out["crash_resumes"] = crash_resumes
    return out


def resolve_spec(cluster: str, *, recipe: Path | None, trainer_sets: tuple[str, ...],
                 max_steps: int | None, faults: dict | None = None, **flags):
    """The JobSpec these options describe (UserError, exit 2, on bad input)."""
    from larsctl.jobs.history import measured_throughput
    from larsctl.planning.spec import resolve_job

    trainer = parse_sets(trainer_sets)
    if max_steps is not None:
        trainer["max_steps"] = max_steps
    return resolve_job(cluster, recipe, trainer=trainer, faults=faults, measured=measured_throughput, **flags)
