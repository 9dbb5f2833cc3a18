"""Sweeps: a grid of ordinary jobs (batches x optimizers x LRs x seeds) under one id.

``plan_sweep`` is pure: it resolves every point of the grid into a JobSpec, so a grid
with one point that cannot run is refused before anything is submitted.  ``submit``
records the sweep's definition in the registry and submits each point as an ordinary
job (tracked by status, cancel and resume like any other) tagged with the sweep id.

Each point evaluates every ``eval_examples`` training examples (so steps-to-target is
measured with the same resolution in examples at every batch size) and, for a
``val/accuracy>=X`` target, stops once it is reached: a sweep measures how many
steps a batch needs, not how far it can go.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from larsctl.config.profiles import ClusterProfile, load_profile
from larsctl.config.recipes import load_recipe
from larsctl.errors import UserError
from larsctl.facts.rules import LR_RULES
from larsctl.jobs.history import measured_throughput
from larsctl.jobs.lifecycle import Warn
from larsctl.jobs.lifecycle import submit as submit_job
from larsctl.jobs.registry import JobRecord, Registry, new_job_id
from larsctl.jobs.tracking import apply_track
from larsctl.planning.planner import PlanError, lr_by_rule, max_per_gpu_batch
from larsctl.planning.spec import JobSpec, resolve_job
from larsctl.results.steps import parse_target


@dataclass(frozen=True)
class SweepPoint:
    batch: int
    optimizer: str
    lr: float
    seed: int

    @property
    def label(self) -> str:
        return f"b{self.batch}-{self.optimizer}-lr{self.lr:.4g}-s{self.seed}"


@dataclass(frozen=True)
class SweepDefinition:
    """What ``larsctl sweep`` was asked; stored with the sweep, read by ``sweep report``."""

    cluster: str
    recipe: str
    target: str
    batches: list[int]
    optimizers: list[str]
    lrs: list[float] | None            # the same LRs at every batch, or
    lr_rules: dict[str, str] | None    # optimizer -> rule, times each factor
    lr_factors: list[float]
    seeds: int
    eval_examples: int
    max_steps: int | None
    trainer: dict = field(default_factory=dict)
    tracking: dict | None = None       # --track: None, the recipe's tracking:; {}: off

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SweepDefinition:
        return cls(**data)

    def lrs_for(self, batch: int, optimizer: str) -> list[float]:
        if self.lrs is not None:
            return list(self.lrs)
        base = lr_by_rule(self.lr_rules[optimizer], batch)[0]
        return [base * factor for factor in self.lr_factors]

    def points(self) -> list[SweepPoint]:
        return [SweepPoint(batch, optimizer, lr, seed)
                for batch in self.batches for optimizer in self.optimizers
                for lr in self.lrs_for(batch, optimizer) for seed in range(1, self.seeds + 1)]


def parse_lr_rules(text: str | None, optimizers: list[str]) -> dict[str, str] | None:
    """``legw`` (every optimizer) or ``lars=legw,sgd=linear``."""
    if text is None:
        return None
    if "=" not in text:
        rules = {opt: text for opt in optimizers}
    else:
        rules = {}
        for part in text.split(","):
            opt, sep, rule = part.partition("=")
            if not sep:
                raise UserError(f"--lr-rule {text!r}: expected RULE or OPTIMIZER=RULE,...")
            rules[opt.strip()] = rule.strip()
        missing = [opt for opt in optimizers if opt not in rules]
        if missing:
            raise UserError(f"--lr-rule {text!r}: no rule for {', '.join(missing)}")
    for rule in rules.values():
        if rule not in LR_RULES:
            raise UserError(f"--lr-rule {text!r}: {rule!r} is not one of {', '.join(LR_RULES)}")
    return rules


def _layout(profile: ClusterProfile, model: str, precision: str, batch: int) -> tuple[int, int]:
    """(GPUs, per-GPU batch) for one point: as many GPUs as the batch fills, the largest
    per-GPU batch that fits, the rest accumulated (the planner derives k)."""
    gpus = min(profile.max_gpus, batch)
    while batch % gpus:
        gpus -= 1
    per_gpu = min(max_per_gpu_batch(profile.gpu_type, model, precision), batch // gpus)
    while (batch // gpus) % per_gpu:
        per_gpu -= 1
    return gpus, per_gpu


def plan_sweep(definition: SweepDefinition, sweep_id: str) -> list[tuple[SweepPoint, JobSpec]]:
    """Every point's JobSpec (pure; UserError naming the point that cannot run)."""
    try:
        target = parse_target(definition.target)
    except ValueError as exc:
        raise UserError(f"--target {exc}") from None
    profile = load_profile(definition.cluster)
    recipe, recipe_path = load_recipe(definition.recipe)
    out = []
    for point in definition.points():
        gpus, per_gpu = _layout(profile, recipe.model, recipe.precision, point.batch)
        trainer = {**definition.trainer, "base_op": point.optimizer, "seed": point.seed,
                   "eval_every_steps": max(1, math.ceil(definition.eval_examples / point.batch))}
        trainer.update(target.trainer_options())
        if definition.max_steps is not None:
            trainer["max_steps"] = definition.max_steps
        try:
            spec = resolve_job(profile, recipe_path, trainer=trainer, measured=measured_throughput, target_batch=point.batch, gpus=gpus,
                               per_gpu_batch=per_gpu, base_lr=point.lr,
                               name=f"{Path(definition.recipe).stem}-{point.label}")
            spec = apply_track(spec, definition.tracking)
            spec.check_runnable()
        except (PlanError, UserError) as exc:
            raise UserError(f"sweep point {point.label}: {exc.message}") from None
        out.append((point, spec))
    return out


def submit(definition: SweepDefinition, warn: Warn, parallel: int | None = None) -> tuple[str, list[JobRecord]]:
    """Record the sweep and submit every point as an ordinary job; (sweep id, records).

    ``parallel``: at most this many points run at once, each lane a chain of jobs that
    waits for the one before it (afterany).  A scheduler with a queue needs no lanes
    (None); the local scheduler runs everything it is given at once, so a sweep there
    defaults to as many lanes as the machine holds jobs (its CPUs over a job's workers).
    """
    recipe_name = Path(definition.recipe).stem
    sweep_id = new_job_id(f"sweep-{recipe_name}")
    planned = plan_sweep(definition, sweep_id)
    profile = load_profile(definition.cluster)
    if parallel is None and profile.scheduler == "local":
        parallel = max(1, profile.cpus_per_node // profile.max_gpus)
    Registry().add_sweep(sweep_id, definition.to_dict())
    records: list[JobRecord] = []
    for n, (_, spec) in enumerate(planned):
        after = records[n - parallel].scheduler_ids[-1] if parallel and n >= parallel else None
        records.append(submit_job(spec, chain=1, max_restarts=3, warn=warn, sweep=sweep_id, after=after))
    return sweep_id, records


def report(sweep_id: str):
    """(ScalingReport, unfinished job ids) of a sweep: steps-to-target from each job's
    metrics, the fit per optimizer, and the jobs' own noise-scale prediction beside it."""
    from larsctl.jobs.lifecycle import refresh
    from larsctl.results import scaling
    from larsctl.results.metrics import read_records
    from larsctl.results.steps import SweepRun

    registry = Registry()
    definition = SweepDefinition.from_dict(registry.sweep(sweep_id))
    records = registry.all(sweep=sweep_id)
    rows, _ = refresh(registry, records)
    runs = []
    for row in rows:
        spec = JobSpec.read(row.record.paths.job_yaml)
        runs.append(SweepRun(job_id=row.record.id, effective_batch=spec.plan.effective_batch,
                             optimizer=spec.trainer["base_op"], lr=spec.plan.base_lr,
                             seed=spec.trainer["seed"], records=read_records(row.record.paths.metrics)))
    unfinished = [row.record.id for row in rows if not row.state.is_terminal]
    predicted = {opt: scaling.predicted_b_noise(runs, opt) for opt in definition.optimizers}
    try:
        result = scaling.analyse(runs, definition.target,
                                 predicted_b_noise={k: v for k, v in predicted.items() if v is not None})
    except ValueError as exc:
        raise UserError(f"sweep {sweep_id}: {exc}") from None
    return result, unfinished
