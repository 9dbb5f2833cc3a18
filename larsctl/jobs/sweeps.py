"""Sweeps: a grid of ordinary jobs (batches x optimizers x LRs x seeds) under one id.

``plan`` resolves every point through the planner before anything is written: its shape
(``spread``: the batch over the most GPUs it fills), its estimate, and its refusals, which
are the planner's own (a batch it cannot place is refused as ``larsctl plan`` refuses it).
Each point stops at the target where the trainer can (``Target.trainer_options``) and
evaluates every ``eval_examples`` training examples, but never so often that evaluating
costs more than ``eval_share`` of its training (the planner's estimate of one validation
against one step): at a large batch a validation is cheap beside a step, at a small one it
is not, so evaluation cost follows the batch as training cost does.

Submitting, resuming and growing a sweep: ``larsctl.jobs.sweep_submit``.  ``report`` reads
each job's metrics into the scaling analysis (``larsctl.results.scaling``).
"""
from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass
from pathlib import Path

from larsctl.config.profiles import ClusterProfile, load_profile
from larsctl.config.recipes import load_recipe
from larsctl.errors import UserError
from larsctl.jobs.history import measured_throughput
from larsctl.jobs.sweep_grid import SweepDefinition, SweepPoint
from larsctl.jobs.tracking import apply_track
from larsctl.planning.estimate import Estimate
from larsctl.planning.planner import PlanError
from larsctl.planning.spec import JobSpec, resolve_job
from larsctl.results.steps import Target, parse_target


@dataclass(frozen=True)
class Planned:
    point: SweepPoint
    spec: JobSpec


def target_of(definition: SweepDefinition) -> Target:
    try:
        return parse_target(definition.target)
    except ValueError as exc:
        raise UserError(f"--target {exc}") from None


def job_name(definition: SweepDefinition, point: SweepPoint) -> str:
    """A point's job name (how ``sweep resume`` finds a job sweep.json missed)."""
    return f"{Path(definition.recipe).stem}-{point.label}"


def plan(definition: SweepDefinition, points: list[SweepPoint] | None = None) -> list[Planned]:
    """Every point's JobSpec (the grid's, or ``points``); UserError naming the first that cannot run."""
    target = target_of(definition)
    points = definition.points() if points is None else points
    profile = load_profile(definition.cluster)
    _, recipe_path = load_recipe(definition.recipe)
    measured = functools.lru_cache(maxsize=None)(measured_throughput)
    return [Planned(p, _spec(definition, profile, recipe_path, p, target, measured)) for p in points]


def _spec(definition: SweepDefinition, profile: ClusterProfile, recipe: Path, point: SweepPoint,
          target: Target, measured) -> JobSpec:
    trainer = {**definition.trainer, "base_op": point.optimizer, "seed": point.seed, **target.trainer_options()}
    if definition.max_steps is not None:
        trainer["max_steps"] = definition.max_steps
    flags = dict(target_batch=point.batch, gpus=definition.gpus, spread=True, base_lr=point.lr,
                 name=job_name(definition, point))
    try:
        first = resolve_job(profile, recipe, trainer=trainer, measured=measured, **flags)
        every = eval_every(definition, point.batch, first.plan.estimate)
        spec = resolve_job(profile, recipe, trainer={**trainer, "eval_every_steps": every}, measured=measured,
                           **flags)
        spec = apply_track(spec, definition.tracking)
        spec.check_runnable()
    except (PlanError, UserError) as exc:
        raise UserError(f"sweep point {point.label}: {exc.message}") from None
    return spec


def eval_every(definition: SweepDefinition, batch: int, estimate: Estimate) -> int:
    """Steps between a point's evaluations: every ``eval_examples`` examples, at most one
    validation per ``eval_share`` of the training time since the one before."""
    one = estimate.validation_seconds / estimate.validations if estimate.validations else 0.0
    by_cost = math.ceil(one / (definition.eval_share * estimate.step_seconds)) if estimate.step_seconds else 1
    return max(1, math.ceil(definition.eval_examples / batch), by_cost)


def one_shape(planned: list[Planned]) -> None:
    """A job array runs every task on one shape: UserError naming two that differ and the GPU
    counts every batch of the grid divides by (``--gpus``)."""
    shapes = {(p.spec.plan.nodes, p.spec.plan.gpus_per_node): p for p in planned}
    if len(shapes) < 2:
        return
    a, b = list(shapes.values())[:2]
    profile = a.spec.profile
    counts = [g for g in range(1, profile.nodes * profile.gpus_per_node + 1)
              if all(p.point.batch % g == 0 for p in planned) and (g <= profile.gpus_per_node
                                                                   or g % profile.gpus_per_node == 0)]
    raise UserError(f"a job array runs every point on one shape, but the planner spreads B={a.point.batch} "
                    f"over {a.spec.plan.gpus} GPU(s) and B={b.point.batch} over {b.spec.plan.gpus}; give "
                    f"--gpus N, one of {', '.join(map(str, counts[-3:]))} (every batch divides by it)")


def concurrency(definition: SweepDefinition, planned: list[Planned]) -> int:
    """Points running at once: ``max_concurrent``, else what the profile holds (its GPUs over a
    point's; on the local profile its CPUs, one a worker)."""
    if definition.max_concurrent:
        return definition.max_concurrent
    profile = planned[0].spec.profile
    widest = max(p.spec.plan.gpus for p in planned)
    room = profile.cpus_per_node if profile.scheduler == "local" else profile.nodes * profile.gpus_per_node
    return max(1, room // widest)


def estimate(planned: list[Planned], lanes: int) -> tuple[float, float]:
    """(GPU-hours, wall seconds) of the sweep from the planner's estimates: each point at most its
    step limit, ``lanes`` at once, each starting when one ends (in grid order)."""
    ends = [0.0] * lanes
    for p in planned:
        heapq.heappush(ends, heapq.heappop(ends) + p.spec.plan.estimate.total_seconds)
    return sum(p.spec.plan.estimate.gpu_hours for p in planned), max(ends)
