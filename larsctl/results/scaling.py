"""Steps to a target across batch sizes: the critical batch, the regimes, the figure.

A sweep trains the same model at several effective batches B, each with a few LRs and
seeds, and evaluates often.  For each run the steps to a target (``val/accuracy>=0.9``)
are the step of the first evaluation that meets it.  Per optimizer and batch, each LR's
cell is the median over its seeds (fewer than half reaching the target: not reached);
the best LR is the one with the smallest median.  The best-LR medians are fitted with

    S(B) = S_min (1 + B_crit / B)        (McCandlish et al. 2018, arXiv 1812.06162, eq. 2.11)

by least squares on log S, with a bootstrap over seeds for B_crit's interval.  From the
fit each batch is in one of three regimes (``REGIME_FACTOR`` = 3):

* perfect scaling      B <= B_crit / 3: steps within 33% of the linear-scaling line
                       S_min B_crit / B (doubling the batch nearly halves the steps);
* diminishing returns  B_crit / 3 < B < 3 B_crit;
* maximal parallelism  B >= 3 B_crit: steps within 33% of S_min (a bigger batch barely
                       saves a step).

Two definitions of "critical batch" are reported, each named where it is printed:
McCandlish et al.'s B_crit, where S = 2 S_min (the fit parameter), and Zhang et al. 2024
("How Does Critical Batch Size Scale in Pre-training?", arXiv 2410.21676), the batch
where the steps exceed linear scaling by 20% (0.2 B_crit under the fitted model, and
measured from the best-LR medians against the smallest batch's linear extrapolation).

Pure: runs in, frozen dataclasses and text out; ``figure_png`` is the one function that
makes bytes (matplotlib on the Agg canvas, imported only there).  Errors are ValueError
naming the bad value.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from larsctl.format import DASH, number, render_table

KINDS = ("train", "val")  # record kinds of metrics.jsonl a target can name
OPS = (">=", "<=", ">", "<")
REGIME_FACTOR = 3.0  # perfect scaling B <= B_crit/3, maximal parallelism B >= 3 B_crit
ZHANG_EXCESS = 0.2  # Zhang et al. 2024: steps 20% over linear scaling
MIN_FIT_BATCHES = 3
BOOTSTRAP = 1000  # resamples of the seeds
BOOTSTRAP_SEED = 0
_GRID_DECADES = 3.0  # B_crit is searched from min(B)/10^3 to max(B)*10^3
_GRID_PER_DECADE = 40

PERFECT, DIMINISHING, MAXIMAL = "perfect scaling", "diminishing returns", "maximal parallelism"

MCCANDLISH = ("McCandlish et al. 2018 (arXiv 1812.06162): B_crit is the batch where steps "
              "S = 2 S_min, the fit parameter of S(B) = S_min (1 + B_crit/B)")
ZHANG = ("Zhang et al. 2024 (arXiv 2410.21676): the critical batch is where steps exceed "
         "linear scaling by 20%")
REGIMES_TEXT = (f"Regimes from the fit: {PERFECT} B <= B_crit/3 (steps within 33% of the "
                f"linear-scaling line S_min B_crit/B), {MAXIMAL} B >= 3 B_crit (steps within 33% "
                f"of S_min), {DIMINISHING} between.")

_TARGET = re.compile(r"^\s*([A-Za-z_]+)/([A-Za-z0-9_]+)\s*(>=|<=|>|<)\s*"
                     r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


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
        return {">=": value >= self.value, "<=": value <= self.value,
                ">": value > self.value, "<": value < self.value}[self.op]


def parse_target(text: str) -> Target:
    """``TAG OP VALUE`` with TAG = kind/key of metrics.jsonl records (kind train or val) and
    OP one of >=, <=, >, <: ``val/accuracy>=0.9``, ``train/loss < 0.5``."""
    match = _TARGET.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"target {text!r}: expected TAG OP VALUE with OP one of >=, <=, >, <, "
                         "e.g. 'val/accuracy>=0.9' or 'val/loss<1.2'")
    kind, key, op, value = match[1], match[2], match[3], float(match[4])
    if kind not in KINDS:
        raise ValueError(f"target {text!r}: record kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not math.isfinite(value):
        raise ValueError(f"target {text!r}: value {match[4]!r} is not a finite number")
    return Target(kind, key, op, value)


def _number(value) -> bool:
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
        if isinstance(step, int) and not isinstance(step, bool) and _number(value) and target.met(value):
            best = step if best is None else min(best, step)
    return best


# -- runs and cells ----------------------------------------------------------
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
        if not (_number(self.lr) and self.lr > 0):
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
    cells: tuple[Cell, ...]  # by LR
    best: Cell | None  # None: no LR reached the target

    @property
    def best_lr(self) -> float | None:
        return None if self.best is None else self.best.lr

    @property
    def median_steps(self) -> float | None:
        return None if self.best is None else self.best.median_steps

    @property
    def median_examples(self) -> float | None:
        return None if self.best is None else self.best.median_examples


# -- the fit -----------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """S(B) = S_min (1 + B_crit / B), least squares on log S over ``batches``."""

    s_min: float
    b_crit: float  # McCandlish's: S(B_crit) = 2 S_min
    rms_log: float  # residual RMS of ln S
    batches: tuple[int, ...]
    steps: tuple[float, ...]  # the best-LR medians fitted
    edge: str | None  # "low"/"high": B_crit at the search bound (the data do not bracket it)
    b_crit_interval: tuple[float, float] | None  # 2.5/97.5 bootstrap percentiles
    s_min_interval: tuple[float, float] | None
    bootstrap_used: int  # resamples that could be fitted
    bootstrap_n: int
    bootstrap_seed: int
    interval_note: str | None  # why there is no interval, or what it rests on

    def predict(self, batch: float) -> float:
        return self.s_min * (1.0 + self.b_crit / batch)

    @property
    def e_min(self) -> float:
        """The fewest examples: S_min B_crit (the limit of S(B) B as B -> 0)."""
        return self.s_min * self.b_crit

    @property
    def zhang_b(self) -> float:
        """Zhang et al.'s critical batch under the fit (S = 1.2 S_min B_crit/B): 0.2 B_crit."""
        return ZHANG_EXCESS * self.b_crit


def _grid(batches: np.ndarray) -> np.ndarray:
    lo = math.log(batches.min()) - _GRID_DECADES * math.log(10)
    hi = math.log(batches.max()) + _GRID_DECADES * math.log(10)
    count = int(round((hi - lo) / math.log(10) * _GRID_PER_DECADE)) + 1
    return np.linspace(lo, hi, count)


def fit_steps(batches: Sequence[float],
              steps: Sequence[float]) -> tuple[float, float, float, str | None]:
    """(S_min, B_crit, residual RMS of ln S, edge) of S(B) = S_min (1 + B_crit/B).

    For a fixed B_crit the best ln S_min is the mean of ln S - ln(1 + B_crit/B) (closed
    form), so only B_crit is searched: on a log grid (40 points a decade, from min(B)/1000
    to max(B)*1000), then golden-section search between the best point's neighbours.
    ``edge`` is "low" or "high" when the best is a bound of the grid.
    """
    b = np.asarray(batches, dtype=float)
    s = np.asarray(steps, dtype=float)
    if b.shape != s.shape or b.size < 2:
        raise ValueError(f"batches, steps: expected two equal-length sequences of at least 2, "
                         f"got {b.size} and {s.size}")
    if not (np.all(np.isfinite(b)) and np.all(b > 0) and np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"batches, steps: expected positive finite numbers, got {list(batches)}, "
                         f"{list(steps)}")
    y = np.log(s)
    grid = _grid(b)
    resid = y[None, :] - np.log1p(np.exp(grid)[:, None] / b[None, :])
    sse = ((resid - resid.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    i = int(np.argmin(sse))
    edge = "low" if i == 0 else "high" if i == len(grid) - 1 else None
    bl, yl = b.tolist(), y.tolist()

    def cost(log_bc: float) -> tuple[float, float]:
        bc = math.exp(log_bc)
        r = [yi - math.log1p(bc / bi) for yi, bi in zip(yl, bl)]
        a = sum(r) / len(r)
        return sum((ri - a) ** 2 for ri in r), a

    if edge is None:
        lo, hi = float(grid[i - 1]), float(grid[i + 1])
        ratio = (math.sqrt(5) - 1) / 2
        c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        fc, fd = cost(c)[0], cost(d)[0]
        while hi - lo > 1e-10:
            if fc < fd:
                hi, d, fd = d, c, fc
                c = hi - ratio * (hi - lo)
                fc = cost(c)[0]
            else:
                lo, c, fc = c, d, fd
                d = lo + ratio * (hi - lo)
                fd = cost(d)[0]
        log_bc = (lo + hi) / 2
        if cost(log_bc)[0] > sse[i]:  # never worse than the grid
            log_bc = float(grid[i])
    else:
        log_bc = float(grid[i])
    total, log_smin = cost(log_bc)
    return math.exp(log_smin), math.exp(log_bc), math.sqrt(total / len(yl)), edge


def regime(batch: float, b_crit: float) -> str:
    """``perfect scaling`` (B <= B_crit/3), ``maximal parallelism`` (B >= 3 B_crit) or
    ``diminishing returns`` (between)."""
    if batch <= b_crit / REGIME_FACTOR:
        return PERFECT
    if batch >= REGIME_FACTOR * b_crit:
        return MAXIMAL
    return DIMINISHING


def zhang_empirical(batches: Sequence[float], steps: Sequence[float],
                    excess: float = ZHANG_EXCESS) -> tuple[float | None, str]:
    """Zhang et al.'s critical batch from measured steps: the first batch where S(B) exceeds the
    smallest batch's linear extrapolation S(B0) B0 / B by ``excess``, interpolated in log-log
    between the two batches around the crossing.  (None, why) when the data do not cross."""
    pairs = sorted(zip(batches, steps))
    if len(pairs) < 2:
        return None, "measured: needs at least 2 batches reaching the target"
    b0, s0 = pairs[0]
    ratios = [(b, s * b / (s0 * b0)) for b, s in pairs]
    limit = 1.0 + excess
    for (b1, r1), (b2, r2) in zip(ratios, ratios[1:]):
        if r2 >= limit:
            t = (math.log(limit) - math.log(r1)) / (math.log(r2) - math.log(r1))
            value = math.exp(math.log(b1) + t * (math.log(b2) - math.log(b1)))
            return value, (f"measured: steps x B over the smallest batch's (B={b0:g}) crosses "
                           f"{limit:g} between B={b1:g} and B={b2:g} (log-log interpolation; the "
                           f"smallest batch is itself above linear scaling, so under the fitted "
                           f"model this is 1.2 B0 + 0.2 B_crit, not 0.2 B_crit)")
    return None, (f"measured: steps stay within {100 * excess:.0f}% of the linear extrapolation "
                  f"from B={b0:g} up to B={pairs[-1][0]:g}; the critical batch is above the "
                  "measured range")


# -- per optimizer -----------------------------------------------------------
@dataclass(frozen=True)
class Regime:
    effective_batch: int
    regime: str
    fitted_steps: float
    measured_steps: float | None  # the best-LR median; None: not reached
    over_linear: float  # fitted S / (S_min B_crit / B) = 1 + B / B_crit
    over_min: float  # fitted S / S_min = 1 + B_crit / B


@dataclass(frozen=True)
class OptimizerScaling:
    optimizer: str
    batches: tuple[BatchResult, ...]  # ascending batch
    fit: Fit | None
    no_fit_reason: str | None
    regimes: tuple[Regime, ...]  # every batch of the sweep, when there is a fit
    zhang_model: float | None  # 0.2 B_crit (Zhang's definition under the fitted model)
    zhang_measured: float | None  # from the best-LR medians (None: see zhang_note)
    zhang_note: str
    predicted_b_noise: float | None  # given to analyse()
    b_crit_over_predicted: float | None  # fitted B_crit / predicted B_noise


@dataclass(frozen=True)
class ScalingReport:
    target: Target
    optimizers: tuple[OptimizerScaling, ...]  # by name
    runs: tuple[RunResult, ...]
    bootstrap_n: int
    bootstrap_seed: int

    @property
    def unfinished_misses(self) -> tuple[RunResult, ...]:
        """Runs that neither reached the target nor finished (counted as not reached)."""
        return tuple(r for r in self.runs if r.steps is None and not r.finished)

    def optimizer(self, name: str) -> OptimizerScaling:
        for o in self.optimizers:
            if o.optimizer == name.upper():
                return o
        raise ValueError(f"optimizer {name!r}: not in this sweep (have "
                         f"{', '.join(o.optimizer for o in self.optimizers)})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target"] = str(self.target)
        for o, od in zip(self.optimizers, d["optimizers"]):
            for b, bd in zip(o.batches, od["batches"]):
                bd.update(best_lr=b.best_lr, median_steps=b.median_steps,
                          median_examples=b.median_examples)
            if o.fit is not None:
                od["fit"].update(e_min=o.fit.e_min, zhang_model=o.fit.zhang_b)
        for r, rd in zip(self.runs, d["runs"]):
            rd["examples"] = r.examples
        d["definitions"] = {"b_crit": MCCANDLISH, "zhang": ZHANG, "regimes": REGIMES_TEXT}
        return d


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


def _batch_results(results: Sequence[RunResult]) -> dict[str, list[BatchResult]]:
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


def _bootstrap(cells: Sequence[Cell], n: int, seed: int) -> tuple[list[float], list[float]]:
    """B_crit and S_min of each resample that still has >= MIN_FIT_BATCHES batches reaching."""
    rng = np.random.default_rng(seed)
    b_crits, s_mins = [], []
    for _ in range(n):
        batches, steps = [], []
        for cell in cells:
            picks = rng.integers(0, len(cell.steps), len(cell.steps))
            median = seed_median([cell.steps[i] for i in picks])
            if median is not None:
                batches.append(cell.effective_batch)
                steps.append(median)
        if len(batches) >= MIN_FIT_BATCHES:
            s_min, b_crit, _, _ = fit_steps(batches, steps)
            b_crits.append(b_crit)
            s_mins.append(s_min)
    return b_crits, s_mins


def _fit(batches: Sequence[BatchResult], n_boot: int, seed: int) -> Fit:
    best = [b.best for b in batches if b.best is not None]
    xs = [c.effective_batch for c in best]
    ys = [c.median_steps for c in best]
    s_min, b_crit, rms, edge = fit_steps(xs, ys)
    b_interval = s_interval = None
    used = 0
    if all(len(c.steps) == 1 for c in best):
        note = "one seed per batch: no bootstrap interval"
    elif n_boot <= 0:
        note = "no bootstrap asked for"
    else:
        b_crits, s_mins = _bootstrap(best, n_boot, seed)
        used = len(b_crits)
        if used:
            b_interval = tuple(float(v) for v in np.percentile(b_crits, [2.5, 97.5]))
            s_interval = tuple(float(v) for v in np.percentile(s_mins, [2.5, 97.5]))
            note = (f"95% bootstrap over seeds: {used} of {n_boot} resamples (seed {seed}) of each "
                    "batch's best-LR seeds, medians retaken and refitted")
            if used < n_boot:
                note += (f"; {n_boot - used} resamples had fewer than {MIN_FIT_BATCHES} batches "
                         "reaching the target and were left out")
        else:
            note = (f"no resample had {MIN_FIT_BATCHES} batches reaching the target: no interval")
    if edge:
        note += (f"; B_crit is at the {edge} bound of the search (the data do not bracket it: "
                 + ("every batch scales almost perfectly, B_crit is above the range)" if edge == "high"
                    else "steps barely fall with the batch, B_crit is below the range)"))
    return Fit(s_min, b_crit, rms, tuple(xs), tuple(ys), edge, b_interval, s_interval, used,
               n_boot, seed, note)


def _prediction(predicted_b_noise, optimizer: str) -> float | None:
    if predicted_b_noise is None:
        return None
    if isinstance(predicted_b_noise, Mapping):
        value = {str(k).upper(): v for k, v in predicted_b_noise.items()}.get(optimizer)
    else:
        value = predicted_b_noise
    if value is not None and not (_number(value) and value > 0):
        raise ValueError(f"predicted_b_noise ({optimizer}): expected a positive number, got {value!r}")
    return None if value is None else float(value)


def analyse(runs: Iterable[SweepRun], target: Target | str, *,
            predicted_b_noise: float | Mapping[str, float] | None = None,
            n_boot: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> ScalingReport:
    """Steps to ``target`` per run, the best-LR medians per (optimizer, batch), the fit with its
    bootstrap interval, the regimes and both critical-batch definitions, per optimizer.

    ``predicted_b_noise``: the noise scale's prediction (one number, or one per optimizer),
    compared as measured with the fitted B_crit.  ``n_boot`` resamples with
    ``numpy.random.default_rng(seed)``: the same inputs give the same report.
    """
    if isinstance(target, str):
        target = parse_target(target)
    if not isinstance(n_boot, int) or n_boot < 0:
        raise ValueError(f"n_boot: expected a non-negative integer, got {n_boot!r}")
    results = measure(list(runs), target)
    if not results:
        raise ValueError("runs: the sweep has no runs")
    optimizers = []
    for name, batches in _batch_results(results).items():
        reached = [b for b in batches if b.best is not None]
        fit, reason, regimes = None, None, ()
        if len(reached) >= MIN_FIT_BATCHES:
            fit = _fit(batches, n_boot, seed)
            regimes = tuple(Regime(b.effective_batch, regime(b.effective_batch, fit.b_crit),
                                   fit.predict(b.effective_batch), b.median_steps,
                                   1.0 + b.effective_batch / fit.b_crit,
                                   1.0 + fit.b_crit / b.effective_batch) for b in batches)
        else:
            which = ", ".join(str(b.effective_batch) for b in reached) or "none"
            reason = (f"no fit: {len(reached)} of {len(batches)} batch sizes reached {target} "
                      f"(B = {which}); the fit needs at least {MIN_FIT_BATCHES}")
        zhang, note = zhang_empirical([b.effective_batch for b in reached],
                                      [b.median_steps for b in reached])
        predicted = _prediction(predicted_b_noise, name)
        optimizers.append(OptimizerScaling(
            optimizer=name, batches=tuple(batches), fit=fit, no_fit_reason=reason, regimes=regimes,
            zhang_model=fit.zhang_b if fit else None, zhang_measured=zhang, zhang_note=note,
            predicted_b_noise=predicted,
            b_crit_over_predicted=fit.b_crit / predicted if fit and predicted else None))
    return ScalingReport(target, tuple(optimizers), tuple(results), n_boot, seed)


def predicted_b_noise(runs: Iterable[SweepRun], optimizer: str | None = None) -> float | None:
    """The median over runs (of ``optimizer``, or all) of noise.noise_summary(records).recommended;
    None when no run logged a noise scale."""
    from larsctl.results.noise import noise_summary

    values = []
    for run in runs:
        if optimizer is not None and run.optimizer != optimizer.upper():
            continue
        try:
            values.append(noise_summary(run.records).recommended)
        except ValueError:
            continue
    return float(np.median(values)) if values else None


# -- text ----------------------------------------------------------------------
def _interval(pair: tuple[float, float] | None) -> str:
    return DASH if pair is None else f"{number(pair[0])}-{number(pair[1])}"


def render(report: ScalingReport, *, markdown: bool = True, lr_table: bool = True) -> str:
    """The text of ``larsctl sweep report``: per optimizer the steps table, every LR cell, the fit,
    both critical-batch definitions, the noise-scale prediction and the regimes."""
    t = report.target
    lines = [f"Steps to {t}: the step of each run's first {t.kind} record meeting it; per batch "
             "and LR the median over seeds (fewer than half the seeds reaching it: not reached); "
             "best LR = smallest median.", ""]
    for o in report.optimizers:
        lines += [f"## {o.optimizer}", ""]
        regimes = {r.effective_batch: r for r in o.regimes}
        rows = []
        for b in o.batches:
            r = regimes.get(b.effective_batch)
            best = b.best
            rows.append((str(b.effective_batch), number(b.best_lr),
                         f"{best.reached}/{len(best.seeds)}" if best else DASH,
                         number(b.median_steps, 6), number(b.median_examples),
                         number(r.fitted_steps, 6) if r else DASH, r.regime if r else DASH))
        lines.append(render_table(("Batch", "Best LR", "Seeds reached", "Median steps", "Examples",
                                   "Fitted steps", "Regime"), rows, markdown=markdown))
        if lr_table:
            rows = [(str(c.effective_batch), number(c.lr) + (" *" if b.best is c else ""),
                     f"{c.reached}/{len(c.seeds)}", number(c.median_steps, 6),
                     " ".join(DASH if s is None else str(s) for s in c.steps))
                    for b in o.batches for c in b.cells]
            lines += ["", render_table(("Batch", "LR (* best)", "Seeds reached", "Median steps",
                                        "Steps per seed"), rows, markdown=markdown)]
        lines.append("")
        f = o.fit
        if f is None:
            lines.append(o.no_fit_reason)
        else:
            lines += [
                f"Fit S(B) = S_min (1 + B_crit/B), least squares on ln S over {len(f.batches)} "
                f"batches (residual RMS of ln S {f.rms_log:.3f}):",
                f"  S_min = {number(f.s_min)} steps (95% {_interval(f.s_min_interval)}), "
                f"E_min = S_min B_crit = {number(f.e_min)} examples",
                f"  B_crit = {number(f.b_crit)} (95% {_interval(f.b_crit_interval)})  "
                f"[McCandlish: S(B_crit) = 2 S_min]",
                f"  {f.interval_note}"]
        lines += ["", "Critical batch by definition:",
                  f"- {MCCANDLISH}: {number(f.b_crit) if f else DASH}",
                  f"- {ZHANG}:",
                  f"    under the fitted model (0.2 B_crit): {number(o.zhang_model)}",
                  f"    {o.zhang_note}" + (f": {number(o.zhang_measured)}" if o.zhang_measured else "")]
        if o.predicted_b_noise is not None:
            ratio = (f"fitted B_crit / predicted = {number(o.b_crit_over_predicted, 3)}"
                     if o.b_crit_over_predicted is not None else "no fit to compare")
            lines.append(f"Noise-scale prediction B_noise (B_simple averaged over progress, "
                         f"McCandlish): {number(o.predicted_b_noise)}; {ratio} (as measured, "
                         "not tuned)")
        lines.append("")
    lines.append(REGIMES_TEXT)
    pending = report.unfinished_misses
    if pending:
        lines.append(f"{len(pending)} run{'s' * (len(pending) != 1)} not finished and not at the "
                     f"target yet, counted as not reached: {', '.join(r.job_id for r in pending)}")
    return "\n".join(lines)


# -- figure --------------------------------------------------------------------
def figure(report: ScalingReport, width_px: int = 1600, height_px: int = 1000, dpi: int = 100):
    """Four panels: steps vs batch (log-log, fit, slope -1 reference), examples vs steps (the
    Pareto curve), steps over linear scaling vs batch (Zhang's 1.2), best LR vs batch; one
    colour per optimizer on shared axes; predicted B_noise as a vertical line where given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from matplotlib import rcParams

    for name, value in (("width_px", width_px), ("height_px", height_px), ("dpi", dpi)):
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_steps, ax_pareto, ax_linear, ax_lr = fig.subplots(2, 2, squeeze=False).ravel()
    colours = rcParams["axes.prop_cycle"].by_key()["color"]  # tab10, as plots.py
    all_batches = [b.effective_batch for o in report.optimizers for b in o.batches]
    lo_b, hi_b = min(all_batches) / 1.5, max(all_batches) * 1.5
    curve_b = np.geomspace(lo_b, hi_b, 200)
    reached_any = any(b.best is not None for o in report.optimizers for b in o.batches)
    for index, o in enumerate(report.optimizers):
        colour = colours[index % len(colours)]
        reached = [b for b in o.batches if b.best is not None]
        xs = [b.effective_batch for b in reached]
        ys = [b.median_steps for b in reached]
        seed_x = [b.effective_batch for b in reached for s in b.best.steps if s is not None]
        seed_y = [s for b in reached for s in b.best.steps if s is not None]
        ax_steps.plot(seed_x, seed_y, ls="none", marker=".", ms=4, color=colour, alpha=0.35,
                      label=f"_{o.optimizer} seeds")
        ax_steps.plot(xs, ys, ls="none", marker="o", ms=6, color=colour,
                      label=f"{o.optimizer} best-LR median")
        missed = [b.effective_batch for b in o.batches if b.best is None]
        if missed and reached_any:  # along the top edge: no step count to show
            ax_steps.plot(missed, [0.96] * len(missed), ls="none", marker="x", ms=7, color=colour,
                          transform=ax_steps.get_xaxis_transform(),
                          label=f"{o.optimizer} not reached (top edge)")
        if o.fit:
            f = o.fit
            ax_steps.plot(curve_b, f.predict(curve_b), color=colour, lw=1.5,
                          label=f"{o.optimizer} fit, B_crit={number(f.b_crit, 3)}")
            ax_steps.plot(curve_b, f.s_min * f.b_crit / curve_b, color=colour, lw=1, ls=":",
                          label=f"{o.optimizer} slope -1 (S_min B_crit/B)")
            ax_steps.axvline(f.b_crit, color=colour, lw=0.8, ls="-.", alpha=0.6)
            s_curve = f.predict(curve_b)
            ax_pareto.plot(s_curve, s_curve * curve_b, color=colour, lw=1.5,
                           label=f"{o.optimizer} fit")
            # fitted S(B) B / S(B0) B0 = (B + B_crit) / (B0 + B_crit), B0 the smallest reached batch
            ax_linear.plot(curve_b, (curve_b + f.b_crit) / (xs[0] + f.b_crit), color=colour,
                           lw=1.5, label=f"{o.optimizer} fit")
        elif xs:  # slope -1 through the smallest batch that reached
            ax_steps.plot(curve_b, ys[0] * xs[0] / curve_b, color=colour, lw=1, ls=":",
                          label=f"{o.optimizer} slope -1")
        ax_pareto.plot(ys, [s * b for s, b in zip(ys, xs)], ls="-", lw=0.6, marker="o", ms=6,
                       color=colour, alpha=0.9, label=f"{o.optimizer} measured")
        for b, s in zip(xs, ys):
            ax_pareto.annotate(f"B={b}", (s, s * b), textcoords="offset points", xytext=(4, 4),
                               fontsize="x-small", color=colour)
        if xs:
            ax_linear.plot(xs, [s * b / (ys[0] * xs[0]) for s, b in zip(ys, xs)], ls="-", lw=0.6,
                           marker="o", ms=6, color=colour, label=f"{o.optimizer} measured")
        lr_pairs = [(b.effective_batch, b.best_lr) for b in reached]
        if lr_pairs:
            ax_lr.plot(*zip(*lr_pairs), marker="o", ms=6, color=colour, label=o.optimizer)
        if o.predicted_b_noise and reached_any:
            for ax in (ax_steps, ax_linear, ax_lr):
                ax.axvline(o.predicted_b_noise, color=colour, lw=1.2, ls="--",
                           label=f"{o.optimizer} predicted B_noise" if ax is ax_steps else None)
    if reached_any:
        ax_linear.axhline(1 + ZHANG_EXCESS, color="0.4", lw=1, ls="--",
                          label="+20% (Zhang et al. 2024)")
        ax_linear.axhline(1.0, color="0.6", lw=0.8, ls=":", label="linear scaling")
    titles = ((ax_steps, f"Steps to {report.target} (McCandlish fit)", "effective batch B", "steps"),
              (ax_pareto, "Examples vs steps (Pareto)", "steps", "examples"),
              (ax_linear, "Steps over linear scaling from the smallest batch", "effective batch B",
               "steps x B / (S B)_smallest"),
              (ax_lr, "Best LR", "effective batch B", "learning rate"))
    for ax, title, xlabel, ylabel in titles:
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if reached_any:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend(loc="best", fontsize="x-small")
        else:
            ax.text(0.5, 0.5, f"no batch reached {report.target}", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
    return fig


def figure_png(report: ScalingReport, width_px: int = 1600, height_px: int = 1000,
               dpi: int = 100) -> bytes:
    """``figure`` as PNG bytes of exactly ``width_px`` x ``height_px``."""
    from larsctl.results.plots import png_bytes

    return png_bytes(figure(report, width_px, height_px, dpi))
