"""The gradient noise scale over a run, and the batch size it recommends.

McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training"
(arXiv 1812.06162).  The trainer logs the simple noise scale B_simple = EMA(tr Sigma) /
EMA(|G|^2) in each train record of metrics.jsonl (``noise_scale``; trainer/gns.py).
Here it is summarised over training progress (step / total_steps):

* early: the median of the first ``EARLY_POINTS`` defined values;
* each quarter of progress: the average of B_simple over that quarter;
* last: the last defined value;
* recommended: the average over all of training progress that the values cover.

Averages are over progress, not over records: B_simple is taken as the piecewise-linear
curve through the logged values against progress and integrated (trapezoids), so each
part of training counts by its share of steps.  A run that logs densely early and
sparsely late is not dominated by its early values.  This matters because the critical
batch grows as the loss falls: an early value under-predicts it.

``tradeoff`` gives McCandlish's steps/examples trade-off (eqs. 2.11-2.12) around a
batch; ``LIMITS`` says what the number is not.  Pure: records in, frozen dataclasses
and text out; errors are ValueError naming the bad value.
"""
from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from larsctl.format import integer, number, render_table

EARLY_POINTS = 5  # "early" is the median of this many first defined values
TRADEOFF_MULTIPLES = (0.5, 1.0, 2.0)  # the batches render() is usually given, x recommended
QUARTER_NAMES = ("1st quarter", "2nd quarter", "3rd quarter", "4th quarter")

LIMITS = """\
Limits of this number:
- B_simple is a plain-SGD statistic (tr Sigma / |G|^2 of the loss gradient). It is not
  calibrated for LARS, whose layer-wise trust ratios rescale each layer's update; read
  it as an order of magnitude for LARS, and measure the critical batch with a sweep
  (larsctl sweep) to know it.
- It is a lower estimate early in training: the noise scale grows as the loss falls,
  which is why the recommendation averages over training progress rather than taking
  the first values.
- B_simple equals the noise scale B_noise only when the Hessian is well conditioned
  (a multiple of the identity); otherwise B_noise = tr(H Sigma) / (G^T H G) differs.
- With BatchNorm the smallest batch is the per-device BN batch (gns_b_small): per-example
  gradients are not defined, and the number moves when the per-device batch does."""

_NO_NOISE_SCALE = (
    "the job logged no noise scale (no train record has noise_scale): it is measured only "
    "with two batch sizes per step, so one rank with batches_per_allreduce 1 has nothing to "
    "measure, and --no-noise-scale turns it off")


@dataclass(frozen=True)
class NoisePoint:
    step: int
    progress: float  # step / total_steps, 0..1
    value: float  # B_simple


@dataclass(frozen=True)
class NoiseSummary:
    """B_simple of one run over training progress (values in samples)."""

    points: tuple[NoisePoint, ...]  # every defined value, by step
    early: float  # median of the first early_points defined values
    early_points: int
    quarters: tuple[float | None, float | None, float | None, float | None]  # None: not covered
    last: float
    last_step: int
    recommended: float  # B_simple averaged over the covered progress
    covered: tuple[float, float]  # progress of the first and last defined value
    total_steps: int
    skipped: int  # train records whose noise_scale was null, not finite or not positive
    b_small: int | None  # gns_b_small: the per-device (BN) batch
    b_big: int | None  # gns_b_big
    effective_batch: int | None

    @property
    def coverage(self) -> float:
        """The share of training progress the defined values span."""
        return self.covered[1] - self.covered[0]

    def to_dict(self, points: bool = False) -> dict:
        """For --json; the per-record series only with ``points``."""
        d = asdict(self)
        d["quarters"] = list(self.quarters)
        d["covered"] = list(self.covered)
        d["coverage"] = self.coverage
        if points:
            d["points"] = [asdict(p) for p in self.points]
        else:
            del d["points"]
            d["n_points"] = len(self.points)
        return d


@dataclass(frozen=True)
class Tradeoff:
    """McCandlish eqs. 2.11-2.12 at one batch: S/S_min = 1 + B_noise/B, E/E_min = 1 + B/B_noise."""

    batch: float
    b_noise: float
    steps_ratio: float  # S / S_min
    examples_ratio: float  # E / E_min

    @property
    def multiple(self) -> float:
        return self.batch / self.b_noise

    def to_dict(self) -> dict:
        return {**asdict(self), "multiple": self.multiple}


def _usable(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _int_or_none(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def noise_summary(records: Iterable[dict]) -> NoiseSummary:
    """B_simple early, per quarter of progress, last, and the progress-weighted average.

    ``records``: one run's metrics.jsonl records (``larsctl.results.metrics.read_records``).
    Train records without a usable ``noise_scale`` (null, not finite, or <= 0: an
    estimate of tr Sigma below zero is noise, not a scale) are skipped.  Progress is
    step / total_steps with the last train record's total_steps (the last step logged
    when no record has it).  Raises ValueError when no record has a usable value.
    """
    train = [r for r in records if isinstance(r, dict) and r.get("kind") == "train"
             and isinstance(r.get("step"), int) and not isinstance(r.get("step"), bool)]
    if not train:
        raise ValueError("no train records: the job has not logged a training step yet, "
                         "so there is no noise scale to read")
    by_step: dict[int, dict] = {}
    for record in train:  # a re-run step counts once, the later copy wins (as read_records)
        by_step[record["step"]] = record
    train = [by_step[s] for s in sorted(by_step)]
    usable = [r for r in train if _usable(r.get("noise_scale"))]
    if not usable:
        if not any("noise_scale" in r for r in train):
            raise ValueError(_NO_NOISE_SCALE)
        raise ValueError(
            f"noise_scale is null or not positive in all {len(train)} train records: the "
            "estimate of |G|^2 never became positive (the gradient noise dominated it), or the "
            "run is too short for the moving averages to settle")
    total = next((int(r["total_steps"]) for r in reversed(train)
                  if _int_or_none(r.get("total_steps")) and r["total_steps"] > 0), None)
    if total is None:
        total = max(train[-1]["step"], 1)
    points = tuple(NoisePoint(r["step"], min(1.0, max(0.0, r["step"] / total)), float(r["noise_scale"]))
                   for r in usable)
    xs = [p.progress for p in points]
    ys = [p.value for p in points]
    first = points[:EARLY_POINTS]
    return NoiseSummary(
        points=points,
        early=statistics.median(p.value for p in first),
        early_points=len(first),
        quarters=tuple(_average(xs, ys, q / 4, (q + 1) / 4, closed=q == 3) for q in range(4)),
        last=points[-1].value,
        last_step=points[-1].step,
        recommended=_average(xs, ys, 0.0, 1.0, closed=True),
        covered=(xs[0], xs[-1]),
        total_steps=total,
        skipped=len(train) - len(usable),
        b_small=_latest(usable, "gns_b_small"),
        b_big=_latest(usable, "gns_b_big"),
        effective_batch=_latest(train, "effective_batch"),
    )


def _latest(records: Sequence[dict], key: str) -> int | None:
    return next((_int_or_none(r[key]) for r in reversed(records) if _int_or_none(r.get(key))), None)


def _average(xs: Sequence[float], ys: Sequence[float], lo: float, hi: float,
             closed: bool = False) -> float | None:
    """Mean over [lo, hi] of the piecewise-linear curve through (xs, ys), on the part of
    [lo, hi] that [xs[0], xs[-1]] covers; None when that part is empty.

    A part of zero length (one point, or the curve only touches the interval) is the mean
    of the points in [lo, hi) ([lo, hi] when ``closed``).
    """
    a, b = max(lo, xs[0]), min(hi, xs[-1])
    if b > a:
        i, j = bisect.bisect_right(xs, a), bisect.bisect_left(xs, b)
        knots = [a, *xs[i:j], b]
        values = [_interp(a, xs, ys), *ys[i:j], _interp(b, xs, ys)]
        area = sum((x1 - x0) * (v0 + v1) / 2
                   for x0, x1, v0, v1 in zip(knots, knots[1:], values, values[1:]))
        return area / (b - a)
    inside = [y for x, y in zip(xs, ys) if lo <= x < hi or (closed and x == hi)]
    return statistics.fmean(inside) if inside else None


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Linear interpolation inside [xs[0], xs[-1]] (xs strictly increasing)."""
    i = bisect.bisect_right(xs, x) - 1
    if i >= len(xs) - 1:
        return ys[-1]
    if i < 0:
        return ys[0]
    t = (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[i] + t * (ys[i + 1] - ys[i])


def tradeoff(b_noise: float, batches: Iterable[float]) -> list[Tradeoff]:
    """Steps and examples relative to their minima at each batch (McCandlish eqs. 2.11-2.12).

    S/S_min = 1 + B_noise/B: a batch at B_noise takes twice the fewest possible steps;
    E/E_min = 1 + B/B_noise: and twice the fewest possible examples.
    """
    if not _usable(b_noise):
        raise ValueError(f"b_noise: expected a positive finite number, got {b_noise!r}")
    out = []
    for batch in batches:
        if not _usable(batch):
            raise ValueError(f"batch: expected a positive finite number, got {batch!r}")
        out.append(Tradeoff(batch=float(batch), b_noise=float(b_noise),
                            steps_ratio=1.0 + b_noise / batch, examples_ratio=1.0 + batch / b_noise))
    return out


def around(summary: NoiseSummary,
           multiples: Sequence[float] = TRADEOFF_MULTIPLES) -> list[Tradeoff]:
    """``tradeoff`` at multiples (default 0.5x, 1x, 2x) of the recommended batch."""
    return tradeoff(summary.recommended, [m * summary.recommended for m in multiples])


def _progress(lo: float, hi: float) -> str:
    return f"{100 * lo:.0f}-{100 * hi:.0f}%"


def render(summary: NoiseSummary, tradeoffs: Sequence[Tradeoff], *, job: str | None = None,
           markdown: bool = True, limits: bool = True) -> str:
    """The text of ``larsctl noise JOB``: B_simple over the run, the trade-off table, the limits."""
    title = "Gradient noise scale B_simple (McCandlish et al. 2018, arXiv 1812.06162)"
    lines = [f"{title} of {job}" if job else title, ""]
    early_span = (summary.points[0].progress, summary.points[summary.early_points - 1].progress)
    rows = [(f"early (median of first {summary.early_points})", _progress(*early_span),
             number(summary.early))]
    for q, (name, value) in enumerate(zip(QUARTER_NAMES, summary.quarters)):
        rows.append((f"{name} (average)", _progress(q / 4, (q + 1) / 4), number(value)))
    rows.append(("last", f"step {summary.last_step} of {summary.total_steps}", number(summary.last)))
    rows.append(("recommended (average over progress)", _progress(*summary.covered),
                 number(summary.recommended)))
    lines.append(render_table(("B_simple", "Progress", "Value (samples)"), rows, markdown=markdown))
    lines.append("")
    skipped = summary.skipped
    notes = [f"{len(summary.points)} defined values from step {summary.points[0].step} to "
             f"{summary.last_step}; {skipped} train record{'s' * (skipped != 1)} without one skipped."]
    if summary.effective_batch:
        notes.append(f"This run's effective batch: {summary.effective_batch} "
                     f"(B_simple measured from batches of {integer(summary.b_small)} and "
                     f"{integer(summary.b_big)}).")
    if summary.coverage < 0.5:
        notes.append(f"The values cover only {100 * summary.coverage:.0f}% of training: "
                     "the recommendation leans on the part that ran and likely under-predicts.")
    if summary.b_small and summary.recommended < summary.b_small:
        notes.append(f"The recommendation is below the per-device BN batch ({summary.b_small}), "
                     "the smallest batch this measurement can speak for.")
    lines.extend(notes)
    if tradeoffs:
        lines += ["", "Trade-off (McCandlish eqs. 2.11-2.12): steps S/S_min = 1 + B_noise/B, "
                      "examples E/E_min = 1 + B/B_noise, with B_noise = "
                      f"{number(tradeoffs[0].b_noise)}", ""]
        rows = [(f"{t.batch:.0f}", f"{t.multiple:g}x", number(t.steps_ratio, 3),
                 number(t.examples_ratio, 3)) for t in tradeoffs]
        lines.append(render_table(("Batch", "x B_noise", "Steps / S_min", "Examples / E_min"),
                                  rows, markdown=markdown))
    if limits:
        lines += ["", LIMITS]
    return "\n".join(lines)


def to_dict(summary: NoiseSummary, tradeoffs: Sequence[Tradeoff], points: bool = False) -> dict:
    """--json of ``larsctl noise``: the summary, the trade-off rows and the limits."""
    return {"summary": summary.to_dict(points=points),
            "tradeoffs": [t.to_dict() for t in tradeoffs],
            "limits": LIMITS}


__all__ = ["EARLY_POINTS", "LIMITS", "TRADEOFF_MULTIPLES", "NoisePoint", "NoiseSummary", "Tradeoff",
           "around", "noise_summary", "render", "to_dict", "tradeoff"]
