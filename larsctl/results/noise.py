"""The gradient noise scale over a run, and the batch size it recommends.

McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training"
(arXiv 1812.06162).  The trainer logs the simple noise scale B_simple = EMA(tr Sigma) /
EMA(|G|^2) in each train record of metrics.jsonl (``noise_scale``; trainer/gns.py), and
for LARS the preconditioned one, with the per-layer trust ratio as the preconditioner
(``noise_scale_lars``, null when not measured).  ``choose_estimator``: the LARS one for a
job whose optimizer scales layers by a trust ratio (LARS, LAMB) when the run logged it,
else the plain-SGD one, and says why.  Here the chosen one is summarised over training
progress (step / total_steps):

* early: the median of the first ``EARLY_POINTS`` defined values;
* each quarter of progress: the average of B_simple over that quarter;
* last: the last defined value;
* recommended: the average over all of training progress that the values cover.

Averages are over progress, not over records: B_simple is taken as the piecewise-linear
curve through the logged values against progress and integrated (trapezoids), so each
part of training counts by its share of steps.  A run that logs densely early and
sparsely late is not dominated by its early values.  This matters because the critical
batch grows as the loss falls: an early value under-predicts it.

A run whose estimate spans fewer than ``min_measured_steps()`` optimizer steps (one time
constant of the trainer's moving averages) is refused by ``check_measured``.

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
from larsctl.planning.from_noise import BatchChoice, recommended_batch

EARLY_POINTS = 5  # "early" is the median of this many first defined values
SGD_FIELD = "noise_scale"  # B_simple of the loss gradient (trainer/gns.py)
LARS_FIELD = "noise_scale_lars"  # preconditioned by the per-layer trust ratio
TRUST_RATIO_OPTIMIZERS = ("lars", "lamb")  # base_op values whose update a trust ratio scales
ESTIMATORS = {"lars-preconditioned": LARS_FIELD, "sgd": SGD_FIELD}
# What each estimator is, in a report's words (larsctl.results.scaling_text).
ESTIMATOR_TEXT = {"lars-preconditioned": "the trust-ratio-preconditioned noise scale of docs/lars-noise-scale.md",
                  "sgd": "B_simple"}
TRADEOFF_MULTIPLES = (0.5, 1.0, 2.0)  # the batches render() is usually given, x recommended
QUARTER_NAMES = ("1st quarter", "2nd quarter", "3rd quarter", "4th quarter")

LIMITS = """\
Limits of this number:
- The plain B_simple ("sgd": tr Sigma / |G|^2 of the loss gradient) is a plain-SGD
  statistic, not calibrated for LARS or LAMB, whose layer-wise trust ratios rescale each
  layer's update; for those optimizers the preconditioned one ("lars-preconditioned",
  noise_scale_lars: the same ratio with each layer's gradient scaled by its trust
  ratio; docs/lars-noise-scale.md) is used where the run logged it. Both estimate where
  larger batches stop paying; measure the critical batch with a sweep (larsctl sweep)
  to know it. In the digits study (bench/RESULTS.md) the fitted critical batch was 1.7x
  the prediction for SGD but 11x for LARS (LEGW): for LARS read it as a lower bound.
- It is a lower estimate early in training: the noise scale grows as the loss falls,
  which is why the recommendation averages over training progress rather than taking
  the first values.
- B_simple equals the noise scale B_noise only when the Hessian is well conditioned
  (a multiple of the identity); otherwise B_noise = tr(H Sigma) / (G^T H G) differs
  (for the preconditioned one: the Hessian of the trust-ratio-scaled update).
- With BatchNorm the smallest batch is the per-device BN batch (gns_b_small): per-example
  gradients are not defined, and the number moves when the per-device batch does."""

_NO_NOISE_SCALE = (
    "the job logged no noise scale (no train record has noise_scale): it is measured only "
    "with two batch sizes per step, so one rank with batches_per_allreduce 1 has nothing to "
    "measure, and --no-noise-scale turns it off")


@dataclass(frozen=True)
class Estimator:
    """Which noise scale a summary reads: ``name`` (a key of ESTIMATORS), its record field, why."""

    name: str
    field: str
    why: str


def choose_estimator(records: Sequence[dict], optimizer: str | None) -> Estimator:
    """The LARS-preconditioned noise scale for an optimizer in TRUST_RATIO_OPTIMIZERS when a
    train record has a usable ``noise_scale_lars``, else the plain-SGD one; with the reason.

    ``optimizer``: the job's trainer ``base_op`` (None: not known)."""
    op = str(optimizer).lower() if optimizer is not None else None
    if op in TRUST_RATIO_OPTIMIZERS:
        if any(r.get("kind") == "train" and _usable(r.get(LARS_FIELD)) for r in records):
            return Estimator("lars-preconditioned", LARS_FIELD,
                             f"the job's optimizer is {op.upper()}, whose per-layer trust ratio scales the "
                             f"update, and the run logged {LARS_FIELD}")
        return Estimator("sgd", SGD_FIELD,
                         f"the job's optimizer is {op.upper()} but no train record has a usable "
                         f"{LARS_FIELD} (the trainer measures it for LARS runs only, and trainers "
                         f"before it not at all): the plain-SGD {SGD_FIELD}, not calibrated for {op.upper()}")
    if op is None:
        return Estimator("sgd", SGD_FIELD, "the job's optimizer is not known (no job.yaml or checkpoint "
                                           f"says its base_op): the plain-SGD {SGD_FIELD}")
    return Estimator("sgd", SGD_FIELD, f"the job's optimizer is {op.upper()}: the plain-SGD {SGD_FIELD}")


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
    estimator: Estimator  # which noise scale, and why (choose_estimator)
    data_size: int | None  # training images N; None: not known
    data_size_from: str  # where N comes from

    @property
    def measured_steps(self) -> int:
        """Optimizer steps the estimator's moving averages span at the last defined value: they run
        from the first step of training (carried across resumes) and decay per optimizer step,
        whether every step or every ``noise_scale_every``-th one is measured."""
        return self.last_step

    @property
    def batch(self) -> BatchChoice:
        """The effective batch the summary recommends (a power of two, capped by N)."""
        return recommended_batch(self.recommended, self.data_size)

    @property
    def coverage(self) -> float:
        """The share of training progress the defined values span."""
        return self.covered[1] - self.covered[0]

    def to_dict(self, points: bool = False) -> dict:
        """For --json; the per-record series only with ``points``."""
        d = asdict(self)
        d["measured_steps"] = self.measured_steps
        d["estimator"] = self.estimator.name
        d["estimator_field"] = self.estimator.field
        d["estimator_why"] = self.estimator.why
        d["recommended_batch"] = self.batch.to_dict()
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


def noise_summary(records: Iterable[dict], optimizer: str | None = None) -> NoiseSummary:
    """B_simple early, per quarter of progress, last, and the progress-weighted average.

    ``records``: one run's metrics.jsonl records (``larsctl.results.metrics.read_records``);
    ``optimizer``: the job's base_op, which picks the estimator (``choose_estimator``).
    Train records without a usable value of the estimator's field (null, not finite, or
    <= 0: an estimate of tr Sigma below zero is noise, not a scale) are skipped.  Progress is
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
    estimator = choose_estimator(train, optimizer)
    key = estimator.field
    usable = [r for r in train if _usable(r.get(key))]
    if not usable:
        if not any(key in r for r in train):
            raise ValueError(_NO_NOISE_SCALE)
        raise ValueError(
            f"{key} is null or not positive in all {len(train)} train records: the "
            "estimate of |G|^2 never became positive (the gradient noise dominated it), or the "
            "run is too short for the moving averages to settle")
    total = next((int(r["total_steps"]) for r in reversed(train)
                  if _int_or_none(r.get("total_steps")) and r["total_steps"] > 0), None)
    if total is None:
        total = max(train[-1]["step"], 1)
    points = tuple(NoisePoint(r["step"], min(1.0, max(0.0, r["step"] / total)), float(r[key]))
                   for r in usable)
    xs = [p.progress for p in points]
    ys = [p.value for p in points]
    first = points[:EARLY_POINTS]
    data_size, data_size_from = _data_size(train)
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
        estimator=estimator,
        data_size=data_size,
        data_size_from=data_size_from,
    )


def _data_size(train: Sequence[dict]) -> tuple[int | None, str]:
    """(training images N, where it comes from): the trainer's ``gns_data_size``, else at least
    steps_per_epoch x effective_batch (the trainer's steps per epoch are N // B, rounded down)."""
    size = _latest(train, "gns_data_size")
    if size:
        return size, "gns_data_size in metrics.jsonl"
    for r in reversed(train):
        spe, batch = _int_or_none(r.get("steps_per_epoch")), _int_or_none(r.get("effective_batch"))
        if spe and batch:
            return spe * batch, (f"at least steps_per_epoch x effective_batch = {spe} x {batch} "
                                 "(no gns_data_size in metrics.jsonl)")
    return None, "not known (no gns_data_size, steps_per_epoch or effective_batch in metrics.jsonl)"


def min_measured_steps() -> int:
    """Optimizer steps ``check_measured`` asks for: one time constant 1 / (1 - EMA_DECAY) of the
    trainer's moving averages (trainer/gns.py).  Before that the bias-corrected averages weigh
    every step alike and are still settling; the first values are dominated by per-step noise."""
    from trainer.gns import EMA_DECAY  # imports torch: only when a summary is checked

    return round(1 / (1 - EMA_DECAY))


def check_measured(summary: NoiseSummary) -> None:
    """ValueError when the run has measured fewer than ``min_measured_steps()`` steps."""
    need = min_measured_steps()
    if summary.measured_steps < need:
        raise ValueError(
            f"{summary.estimator.field} has been measured over {summary.measured_steps} optimizer "
            f"step{'s' * (summary.measured_steps != 1)}; a recommendation needs at least {need} (one time "
            f"constant of the trainer's moving averages, 1/(1 - EMA_DECAY) steps): {need - summary.measured_steps} "
            "more steps of training")


def steps_to_target(records: Iterable[dict], stop_at_val_accuracy: float | None) -> tuple[int, str]:
    """S(B0): the steps the run took to its target, and how that was read.

    The first validation whose accuracy reached ``stop_at_val_accuracy`` (the trainer's stop
    rule, >=); when it was not reached, the steps the run has done (a lower bound); without a
    target, the run's planned total steps (its end taken as the target).  ValueError when the
    records have no train step."""
    records = [r for r in records if isinstance(r, dict)]
    if stop_at_val_accuracy is not None:
        reached = [r["step"] for r in records if r.get("kind") == "val" and _int_or_none(r.get("step"))
                   and _usable(r.get("accuracy")) and r["accuracy"] >= stop_at_val_accuracy]
        if reached:
            return min(reached), f"it reached val/accuracy>={stop_at_val_accuracy:g} at step {min(reached)}"
    train = [r for r in records if r.get("kind") == "train" and _int_or_none(r.get("step"))]
    if not train:
        raise ValueError("no train records: the run has no steps to predict from")
    done = max(r["step"] for r in train)
    if stop_at_val_accuracy is not None:
        return done, (f"it has not reached val/accuracy>={stop_at_val_accuracy:g} in its {done} steps: "
                      f"{done}, a lower bound")
    total = next((int(r["total_steps"]) for r in reversed(train) if _int_or_none(r.get("total_steps"))), None)
    steps = total or done
    return steps, f"no target set: its {steps} planned steps, its end taken as the target"


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
    lines = [f"{title} of {job}" if job else title,
             f"Estimator: {summary.estimator.name} ({summary.estimator.field}): {summary.estimator.why}.", ""]
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
             f"{summary.last_step} ({summary.measured_steps} measured steps); {skipped} train "
             f"record{'s' * (skipped != 1)} without one skipped.",
             f"Recommended effective batch {summary.batch.text()}; training images: "
             f"{integer(summary.data_size)} ({summary.data_size_from})."]
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
    return {"estimator": summary.estimator.name, "estimator_why": summary.estimator.why,
            "recommended_batch": summary.batch.to_dict(),
            "summary": summary.to_dict(points=points),
            "tradeoffs": [t.to_dict() for t in tradeoffs],
            "limits": LIMITS}


__all__ = ["EARLY_POINTS", "ESTIMATORS", "ESTIMATOR_TEXT", "LARS_FIELD", "LIMITS", "SGD_FIELD", "TRADEOFF_MULTIPLES",
           "TRUST_RATIO_OPTIMIZERS", "Estimator", "NoisePoint", "NoiseSummary", "Tradeoff", "around",
           "check_measured", "choose_estimator", "min_measured_steps", "noise_summary", "render",
           "steps_to_target", "to_dict", "tradeoff"]
