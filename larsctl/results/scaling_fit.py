"""The fit S(B) = S_min (1 + B_crit / B) to the best-LR medians, with a bootstrap over seeds.

McCandlish et al. 2018 (arXiv 1812.06162, eq. 2.11): S_min is the fewest steps (the limit
of a huge batch), B_crit the batch where the steps are twice that.  The fit is least
squares on ln S over the batches whose best LR reached the target (at least
``MIN_FIT_BATCHES``); the 95% intervals of B_crit and S_min come from resampling each
batch's best-LR seeds with ``numpy.random.default_rng(seed)``, so the same inputs give
the same intervals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from larsctl.results.critical_batch import ZHANG_EXCESS
from larsctl.results.steps import BatchResult, Cell, seed_median

MIN_FIT_BATCHES = 3
BOOTSTRAP = 1000  # resamples of the seeds
BOOTSTRAP_SEED = 0
_GRID_DECADES = 3.0  # B_crit is searched from min(B)/10^3 to max(B)*10^3
_GRID_PER_DECADE = 40


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


# -- least squares -------------------------------------------------------------
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
    log_bc = float(grid[i])
    if edge is None:
        refined = _golden_section(lambda x: _cost(x, bl, yl)[0], float(grid[i - 1]),
                                  float(grid[i + 1]))
        if _cost(refined, bl, yl)[0] <= sse[i]:  # never worse than the grid
            log_bc = refined
    total, log_smin = _cost(log_bc, bl, yl)
    return math.exp(log_smin), math.exp(log_bc), math.sqrt(total / len(yl)), edge


def _grid(batches: np.ndarray) -> np.ndarray:
    lo = math.log(batches.min()) - _GRID_DECADES * math.log(10)
    hi = math.log(batches.max()) + _GRID_DECADES * math.log(10)
    count = int(round((hi - lo) / math.log(10) * _GRID_PER_DECADE)) + 1
    return np.linspace(lo, hi, count)


def _cost(log_bc: float, batches: list[float], log_steps: list[float]) -> tuple[float, float]:
    """(sum of squared residuals, best ln S_min) at B_crit = exp(log_bc)."""
    bc = math.exp(log_bc)
    r = [yi - math.log1p(bc / bi) for yi, bi in zip(log_steps, batches)]
    a = sum(r) / len(r)
    return sum((ri - a) ** 2 for ri in r), a


def _golden_section(f: Callable[[float], float], lo: float, hi: float) -> float:
    """Where ``f`` (unimodal on [lo, hi]) is least, to 1e-10."""
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = f(c), f(d)
    while hi - lo > 1e-10:
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = f(d)
    return (lo + hi) / 2


# -- the fit of a sweep's batches, and its bootstrap -----------------------------
def fit_batches(batches: Sequence[BatchResult], n_boot: int, seed: int) -> Fit:
    """The fit to the best-LR medians of ``batches`` (those that reached the target: at least
    ``MIN_FIT_BATCHES``), with ``n_boot`` bootstrap resamples over seeds for the intervals."""
    best = [b.best for b in batches if b.best is not None]
    xs = [c.effective_batch for c in best]
    ys = [c.median_steps for c in best]
    s_min, b_crit, rms, edge = fit_steps(xs, ys)
    b_interval, s_interval, used, note = _intervals(best, n_boot, seed)
    if edge:
        note += (f"; B_crit is at the {edge} bound of the search (the data do not bracket it: "
                 + ("every batch scales almost perfectly, B_crit is above the range)" if edge == "high"
                    else "steps barely fall with the batch, B_crit is below the range)"))
    return Fit(s_min, b_crit, rms, tuple(xs), tuple(ys), edge, b_interval, s_interval, used,
               n_boot, seed, note)


def _intervals(best: Sequence[Cell], n_boot: int, seed: int):
    """(B_crit's interval, S_min's interval, resamples used, what they rest on or why none)."""
    if all(len(c.steps) == 1 for c in best):
        return None, None, 0, "one seed per batch: no bootstrap interval"
    if n_boot <= 0:
        return None, None, 0, "no bootstrap asked for"
    b_crits, s_mins = _bootstrap(best, n_boot, seed)
    used = len(b_crits)
    if not used:
        return None, None, 0, (f"no resample had {MIN_FIT_BATCHES} batches reaching the target: "
                               "no interval")
    b_interval = tuple(float(v) for v in np.percentile(b_crits, [2.5, 97.5]))
    s_interval = tuple(float(v) for v in np.percentile(s_mins, [2.5, 97.5]))
    note = (f"95% bootstrap over seeds: {used} of {n_boot} resamples (seed {seed}) of each "
            "batch's best-LR seeds, medians retaken and refitted")
    if used < n_boot:
        note += (f"; {n_boot - used} resamples had fewer than {MIN_FIT_BATCHES} batches "
                 "reaching the target and were left out")
    return b_interval, s_interval, used, note


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
