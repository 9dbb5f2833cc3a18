"""Steps to a target: each run's, and each (optimizer, batch, LR) cell's over its seeds.

A sweep trains the same model at several effective batches B, each with a few LRs and
seeds, and evaluates often.  For each run the steps to a target (``val/accuracy>=0.9``)
are the step of the first evaluation that meets it.  Per optimizer and batch, each LR's
cell is the median over its seeds (fewer than half reaching the target: not reached);
the best LR is the one with the smallest median.  Those best-LR medians are what
``larsctl.results.scaling_fit`` fits.

Pure: records in, frozen dataclasses out.  Errors are ValueError naming the bad value.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence


# What a target can name: the metrics.jsonl records the trainer writes (trainer/metrics.py),
# whether higher is better, and the range the value lives in.
@dataclass(frozen=True)
class Metric:
    higher_is_better: bool
    low: float
    high: float = math.inf


METRICS = {
    "val/accuracy": Metric(True, 0.0, 1.0),
    "val/top5": Metric(True, 0.0, 1.0),
    "val/loss": Metric(False, 0.0),
    "train/accuracy": Metric(True, 0.0, 1.0),
    "train/loss": Metric(False, 0.0),
}
OPS = (">=", "<=")  # reached at the value itself, as the trainer stops
# The trainer option that ends a run at a target, per target (trainer/run.py ``_validate``: it
# stops after the first validation whose top-1 is >= the value: the comparison of ``met``).
TRAINER_STOPS = {("val/accuracy", ">="): "stop_at_val_accuracy"}

_TARGET = re.compile(r"^\s*([A-Za-z_0-9]+/[A-Za-z0-9_]+)\s*(>=|<=|>|<)\s*"
                     r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_EXPECTED = "expected KIND/METRIC>=VALUE or KIND/METRIC<=VALUE, e.g. 'val/accuracy>=0.9' or 'val/loss<=1.2'"


# -- targets -----------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """``kind/key OP value``: val/accuracy >= 0.9 is met by a val record whose accuracy is >= 0.9."""

    kind: str
    key: str
    op: str
    value: float

    @property
    def tag(self) -> str:
        return f"{self.kind}/{self.key}"

    def __str__(self) -> str:
        return f"{self.tag}{self.op}{self.value:g}"

    def met(self, value: float) -> bool:
        return value >= self.value if self.op == ">=" else value <= self.value

    def trainer_options(self) -> dict:
        """The trainer option that stops a run at this target ({} where the trainer cannot: the
        run goes on to its last step, and the sweep still finds the first evaluation meeting it)."""
        option = TRAINER_STOPS.get((self.tag, self.op))
        return {option: self.value} if option else {}


def parse_target(text: str) -> Target:
    """``KIND/METRIC OP VALUE`` with OP >= or <= (in the metric's better direction) and a value
    the metric can reach but does not meet before training; ValueError naming the text."""
    match = _TARGET.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r}: {_EXPECTED}")
    tag, op, value = match[1], match[2], float(match[3])
    if op not in OPS:
        raise ValueError(f"{text!r}: {op!r} is not a target operator: a target is reached at its value, as "
                         f"the trainer stops (--stop-at-val-accuracy: top-1 >= the value); use "
                         f"'{tag}{op}={match[3]}'")
    metric = METRICS.get(tag)
    if metric is None:
        raise ValueError(f"{text!r}: unknown metric {tag!r}; expected one of {', '.join(METRICS)}")
    if op != (">=" if metric.higher_is_better else "<="):
        better = "higher: use '>='" if metric.higher_is_better else "lower: use '<='"
        raise ValueError(f"{text!r}: {tag} is better {better}")
    if not math.isfinite(value):
        raise ValueError(f"{text!r}: value {match[3]!r} is not a finite number")
    return Target(*tag.split("/"), op, _check_reachable(text, tag, metric, value))


def _check_reachable(text: str, tag: str, metric: Metric, value: float) -> float:
    if metric.higher_is_better and value > metric.high:
        raise ValueError(f"{text!r}: unreachable: {tag} is at most {metric.high:g}")
    if metric.higher_is_better and value <= metric.low:
        raise ValueError(f"{text!r}: met before any training: {tag} is never below {metric.low:g}")
    if not metric.higher_is_better and value <= metric.low:
        raise ValueError(f"{text!r}: unreachable: {tag} stays above {metric.low:g}")
    return value


def finite_number(value) -> bool:
    """An int or float (not a bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def steps_to_target(records: Iterable[dict], target: Target) -> int | None:
    """The step of the first record of ``target.kind`` (by step) whose ``target.key`` meets the
    target; None when none does.  Records without a finite value of the key (a torn or
    absent series, a NaN after divergence) are skipped."""
    best = None
    for record in records:
        if not (isinstance(record, dict) and record.get("kind") == target.kind):
            continue
        step, value = record.get("step"), record.get(target.key)
        if (isinstance(step, int) and not isinstance(step, bool) and finite_number(value)
                and target.met(value)):
            best = step if best is None else min(best, step)
    return best


# -- runs ---------------------------------------------------------------------
@dataclass(frozen=True)
class SweepRun:
    """One job of a sweep.  ``optimizer`` is compared case-insensitively (stored upper-case)."""

    job_id: str
    effective_batch: int
    optimizer: str
    lr: float
    seed: int
    records: tuple[dict, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self):
        if not (isinstance(self.effective_batch, int) and not isinstance(self.effective_batch, bool)
                and self.effective_batch > 0):
            raise ValueError(f"{self.job_id}: effective_batch: expected a positive integer, "
                             f"got {self.effective_batch!r}")
        if not (finite_number(self.lr) and self.lr > 0):
            raise ValueError(f"{self.job_id}: lr: expected a positive number, got {self.lr!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"{self.job_id}: seed: expected an integer, got {self.seed!r}")
        if not (isinstance(self.optimizer, str) and self.optimizer.strip()):
            raise ValueError(f"{self.job_id}: optimizer: expected a name, got {self.optimizer!r}")
        object.__setattr__(self, "optimizer", self.optimizer.strip().upper())
        object.__setattr__(self, "records", tuple(self.records))


@dataclass(frozen=True)
class RunResult:
    job_id: str
    effective_batch: int
    optimizer: str
    lr: float
    seed: int
    steps: int | None  # steps to target; None: not reached
    finished: bool  # the run logged its "done" event

    @property
    def examples(self) -> int | None:
        return None if self.steps is None else self.steps * self.effective_batch


def measure(runs: Iterable[SweepRun], target: Target) -> list[RunResult]:
    """Steps to ``target`` of every run.  Raises on a repeated (optimizer, batch, lr, seed)
    and on a target met at step 0 (met before training: choose a stricter one)."""
    out, seen = [], {}
    for run in runs:
        key = (run.optimizer, run.effective_batch, run.lr, run.seed)
        if key in seen:
            raise ValueError(f"{run.job_id}: the same optimizer, batch, lr and seed as {seen[key]} "
                             f"({run.optimizer}, B={run.effective_batch}, lr={run.lr:g}, seed "
                             f"{run.seed}); pass one of them")
        seen[key] = run.job_id
        steps = steps_to_target(run.records, target)
        if steps == 0:
            raise ValueError(f"target {target}: {run.job_id} meets it at step 0, before training; "
                             "choose a stricter target")
        finished = any(r.get("kind") == "event" and r.get("event") == "done" for r in run.records)
        out.append(RunResult(run.job_id, run.effective_batch, run.optimizer, run.lr, run.seed,
                             steps, finished))
    return out


# -- cells: seeds per (optimizer, batch, LR), the best LR per batch -----------
@dataclass(frozen=True)
class Cell:
    """One (optimizer, batch, LR): the seeds and their steps to target."""

    optimizer: str
    effective_batch: int
    lr: float
    seeds: tuple[int, ...]
    steps: tuple[int | None, ...]  # per seed, as seeds
    median_steps: float | None  # seed_median(steps)

    @property
    def reached(self) -> int:
        return sum(s is not None for s in self.steps)

    @property
    def median_examples(self) -> float | None:
        return None if self.median_steps is None else self.median_steps * self.effective_batch


def seed_median(steps: Sequence[int | None]) -> float | None:
    """Median steps over seeds, a seed that missed counting as slower than any that reached.

    None when fewer than half the seeds reached the target.  With exactly half reaching
    (an even count) the median is the slowest seed that reached.
    """
    if not steps:
        raise ValueError("steps: expected at least one seed")
    reached = sorted(float(s) for s in steps if s is not None)
    n = len(steps)
    if 2 * len(reached) < n:
        return None
    values = reached + [math.inf] * (n - len(reached))
    mid = n // 2
    if n % 2:
        return values[mid]
    low, high = values[mid - 1], values[mid]
    return low if math.isinf(high) else (low + high) / 2


@dataclass(frozen=True)
class BatchResult:
    """One optimizer at one batch: every LR's cell, and the best (smallest median)."""

    optimizer: str
    effective_batch: int
    cells: tuple[Cell, ...]  # by LR, ascending
    best: Cell | None  # None: no LR reached the target

    @property
    def best_lr(self) -> float | None:
        return None if self.best is None else self.best.lr

    @property
    def edge(self) -> str | None:
        """Where the best LR sits in this batch's LR grid: ``low``/``high`` at its smallest/largest
        (the optimum may lie beyond), ``only`` in a grid of one LR; None inside, or no best."""
        if self.best is None:
            return None
        if len(self.cells) == 1:
            return "only"
        return "low" if self.best is self.cells[0] else "high" if self.best is self.cells[-1] else None

    @property
    def median_steps(self) -> float | None:
        return None if self.best is None else self.best.median_steps

    @property
    def median_examples(self) -> float | None:
        return None if self.best is None else self.best.median_examples


def batch_results(results: Sequence[RunResult]) -> dict[str, list[BatchResult]]:
    """Per optimizer (by name), its batches ascending: each LR's cell over its seeds, and the
    best LR (smallest median; the smaller LR on a tie)."""
    cells: dict[tuple[str, int, float], list[RunResult]] = {}
    for r in results:
        cells.setdefault((r.optimizer, r.effective_batch, r.lr), []).append(r)
    by_batch: dict[tuple[str, int], list[Cell]] = {}
    for (opt, batch, lr), members in sorted(cells.items()):
        members = sorted(members, key=lambda r: r.seed)
        steps = tuple(m.steps for m in members)
        by_batch.setdefault((opt, batch), []).append(
            Cell(opt, batch, lr, tuple(m.seed for m in members), steps, seed_median(steps)))
    out: dict[str, list[BatchResult]] = {}
    for (opt, batch), batch_cells in sorted(by_batch.items()):
        reached = [c for c in batch_cells if c.median_steps is not None]
        best = min(reached, key=lambda c: (c.median_steps, c.lr)) if reached else None
        out.setdefault(opt, []).append(BatchResult(opt, batch, tuple(batch_cells), best))
    return out
