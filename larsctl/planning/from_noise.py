"""A job at another effective batch, and clusters ranked by predicted time to the job's target.

McCandlish, Kaplan, Amodei et al. 2018 (arXiv 1812.06162), eq. 2.11: the optimizer steps to a
given loss or accuracy at batch B are

    S(B) = S_min (1 + B_noise / B)

with S_min the fewest steps any batch needs.  One run at batch B0 that took S(B0) steps gives
S_min = S(B0) / (1 + B_noise / B0), and so S(B) at every other batch.  A cluster's time to the
target at B is S(B) x the planner's step time for the shape it gives B there (the hardware
table's throughput, or what finished jobs on that profile measured), and its GPU-hours are that
time x the GPUs of the shape.

``at_batch``: the job re-planned at another batch, from its job.yaml (what ran, not the recipe
file as it is now): same model, precision, epochs, LR rule and trainer options; the job's
per-GPU batch where it divides B (the noise scale was measured at that BatchNorm batch); the
learning rate and warmup re-planned by the job's LR rule.  ``candidate_batches`` and
``rank``: the batches ``larsctl plan --from-noise`` compares and the pick (``PICK_RULE``).
Pure: the measured throughput comes in as a function, as for ``resolve_job``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable, Sequence

from larsctl.config.profiles import ClusterProfile
from larsctl.format import duration, number, render_table
from larsctl.planning.planner import (
    Cluster,
    PlanError,
    _pow2_floor,
    lr_by_rule,
    make_plan,
    max_per_gpu_batch,
)
from larsctl.planning.replan import shape_text, spec_request, with_plan
from larsctl.planning.spec import JobSpec

SPAN = 4  # candidates: the powers of two from B_noise / SPAN to SPAN x B_noise
NEAR_FASTEST = 0.10  # a candidate within this share of the fastest time ...
FEWER_GPU_HOURS = 0.25  # ... that saves at least this share of its GPU-hours is picked instead
PICK_RULE = (f"the fastest, unless another candidate is within {NEAR_FASTEST:.0%} of its time at "
             f"{FEWER_GPU_HOURS:.0%} or more fewer GPU-hours (then the one of those with the fewest "
             "GPU-hours)")


@dataclass(frozen=True)
class BatchChoice:
    """The effective batch B_noise recommends: the nearest power of two (what the planner's
    per-GPU batches divide), at most the largest power of two within the training images."""

    batch: int
    b_noise: float
    data_size: int | None  # training images N; None: unknown, not capped
    capped: bool  # the nearest power of two was above N

    def text(self) -> str:
        nearest = nearest_power_of_two(self.b_noise)
        if self.capped:
            return (f"{self.batch}: capped by the {self.data_size:,} training images (the nearest power of "
                    f"two to B_noise {number(self.b_noise)}, {nearest}, is more than the data set; "
                    f"{self.batch} is the largest power of two within it)")
        return f"{self.batch}: the power of two nearest to B_noise {number(self.b_noise)}"

    def to_dict(self) -> dict:
        return {**asdict(self), "why": self.text()}


def nearest_power_of_two(value: float) -> int:
    return 2 ** max(0, round(math.log2(max(1.0, value))))


def recommended_batch(b_noise: float, data_size: int | None) -> BatchChoice:
    """The power of two nearest to ``b_noise``, capped by ``data_size`` (a batch is at most the
    training set: the planner refuses more)."""
    batch = nearest_power_of_two(b_noise)
    if data_size is not None and batch > data_size:
        return BatchChoice(_pow2_floor(data_size), b_noise, data_size, True)
    return BatchChoice(batch, b_noise, data_size, False)


def candidate_batches(b_noise: float, data_size: int | None, span: int = SPAN) -> list[int]:
    """The powers of two from ``b_noise / span`` to ``span x b_noise``; where ``data_size`` cuts
    that range (a batch is at most the training set), from at most cap / ``span`` to the cap, the
    largest power of two within ``data_size``, so that a few batches are still compared."""
    low = 2 ** max(0, math.ceil(math.log2(max(1.0, b_noise / span))))
    high = max(low, _pow2_floor(span * b_noise))
    if data_size is not None and _pow2_floor(data_size) < high:
        high = _pow2_floor(data_size)
        low = min(low, max(1, high // span))
    return [2 ** i for i in range(low.bit_length() - 1, high.bit_length())]


# -- the job at another batch -------------------------------------------------------------

def _per_gpu(spec: JobSpec, profile: ClusterProfile, batch: int) -> int:
    """The job's per-GPU batch where it fits ``profile`` and divides ``batch``, else the largest
    that does (at most the job's: the BatchNorm batch the noise scale was measured at)."""
    largest = max_per_gpu_batch(profile.gpu_type, spec.plan.model, spec.plan.precision)
    top = min(spec.plan.per_gpu_batch, largest, batch)
    return next(d for d in range(top, 0, -1) if batch % d == 0)


def _lr_overrides(spec: JobSpec, batch: int) -> tuple[dict[str, float], dict[str, str]]:
    """(overrides, rule texts) of the job's LR and warmup re-planned at ``batch`` by its LR rule.

    Where the job used its rule's value, the rule gives the new one (no override).  Where the
    job pinned a value (a recipe's or a flag's override), it is scaled by the rule's ratio
    rule(B) / rule(B0): the job's own tuning, moved along the rule.  Epsilon does not depend on
    the batch: the job's is kept.
    """
    plan = spec.plan
    old = dict(zip(("base_lr", "warmup_epochs"), lr_by_rule(plan.lr_rule, plan.effective_batch)[:2]))
    new = dict(zip(("base_lr", "warmup_epochs"), lr_by_rule(plan.lr_rule, batch)[:2]))
    overrides: dict[str, float] = {"epsilon": plan.epsilon}
    texts = {"epsilon": f"the job's {plan.epsilon:g} (it does not depend on the batch)"}
    for key in ("base_lr", "warmup_epochs"):
        pinned = getattr(plan, key)
        if math.isclose(pinned, old[key], rel_tol=1e-9):
            continue
        ratio = new[key] / old[key] if old[key] else 1.0
        overrides[key] = pinned * ratio
        texts[key] = (f"the job's {pinned:g} at batch {plan.effective_batch} x {plan.lr_rule} "
                      f"{number(new[key])}/{number(old[key])} = {overrides[key]:g}")
    return overrides, texts


def at_batch(spec: JobSpec, profile: ClusterProfile, batch: int, train_images: int,
             measured: Callable[[str, str, int, str], Any] | None = None) -> JobSpec:
    """``spec`` (a job's job.yaml) re-planned at effective batch ``batch`` on ``profile``, with
    ``train_images`` training images; PlanError (the planner's own line) when it cannot be placed.

    The LR and warmup follow the job's LR rule (``_lr_overrides``), not the job's numbers."""
    plan = spec.plan
    overrides, texts = _lr_overrides(spec, batch)
    image_size = spec.trainer.get("image_size", 224)
    request = spec_request(spec, target_batch=batch, per_gpu_batch=_per_gpu(spec, profile, batch),
                           overrides=overrides, train_images=train_images,
                           measured=measured(profile.name, plan.model, image_size, plan.precision) if measured
                           else None)
    new = make_plan(Cluster.of(profile), request)
    new = replace(new, rules={**new.rules, **texts,
                              "per_gpu_batch": f"the job's {plan.per_gpu_batch}, or the largest that divides "
                                               f"{batch} and fits {profile.gpu_type}"})
    return with_plan(spec, profile, new, name=f"{spec.name}-b{batch}")


# -- clusters ranked by predicted time -------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """What the prediction stands on: the job's batch B0, its steps S(B0), B_noise."""

    batch: int  # B0
    steps: int  # S(B0)
    steps_from: str  # how S(B0) was read from the run
    b_noise: float
    estimator: str  # larsctl.results.noise's estimator name

    @property
    def s_min(self) -> float:
        return self.steps / (1 + self.b_noise / self.batch)

    def steps_at(self, batch: int) -> float:
        """S(B) = S_min (1 + B_noise / B)."""
        return self.s_min * (1 + self.b_noise / batch)


@dataclass(frozen=True)
class Candidate:
    cluster: str
    batch: int
    shape: str
    gpus: int
    steps: float  # S(B)
    step_seconds: float
    throughput: str  # the planner's figure: "table: ..." or "measured: ..."

    @property
    def seconds(self) -> float:
        return self.steps * self.step_seconds

    @property
    def gpu_hours(self) -> float:
        return self.seconds * self.gpus / 3600

    def to_dict(self) -> dict:
        return {**asdict(self), "seconds": self.seconds, "gpu_hours": self.gpu_hours,
                "measured": self.throughput.startswith("measured")}


@dataclass(frozen=True)
class Refused:
    cluster: str
    batch: int
    reason: str  # the planner's line


@dataclass(frozen=True)
class Ranking:
    reference: Reference
    data_size: int | None
    candidates: tuple[Candidate, ...]  # by predicted time, fastest first
    refused: tuple[Refused, ...]
    pick: Candidate
    why: str

    def to_dict(self) -> dict:
        ref = self.reference
        return {"reference": {**asdict(ref), "s_min": ref.s_min}, "data_size": self.data_size,
                "rule": PICK_RULE, "assumptions": list(assumptions(ref)),
                "candidates": [c.to_dict() for c in self.candidates],
                "refused": [asdict(r) for r in self.refused],
                "pick": self.pick.to_dict(), "why": self.why}


def candidates(spec: JobSpec, profiles: Sequence[ClusterProfile], reference: Reference,
               data_size: int, measured: Callable[[str, str, int, str], Any] | None = None
               ) -> tuple[list[Candidate], list[Refused]]:
    """Every (profile, batch of ``candidate_batches``) the planner can place, and those it cannot."""
    placed, refused = [], []
    for profile in profiles:
        for batch in candidate_batches(reference.b_noise, data_size):
            try:
                plan = at_batch(spec, profile, batch, data_size, measured).plan
            except PlanError as exc:
                refused.append(Refused(profile.name, batch, exc.message))
                continue
            placed.append(Candidate(profile.name, batch, shape_text(plan), plan.gpus,
                                    reference.steps_at(batch), plan.estimate.step_seconds,
                                    plan.estimate.throughput))
    return placed, refused


def choose(placed: Iterable[Candidate]) -> tuple[Candidate, str]:
    """The pick by ``PICK_RULE`` and why, in words."""
    ranked = sorted(placed, key=lambda c: (c.seconds, c.gpu_hours))
    fastest = ranked[0]
    thrifty = [c for c in ranked[1:] if c.seconds <= (1 + NEAR_FASTEST) * fastest.seconds
               and c.gpu_hours <= (1 - FEWER_GPU_HOURS) * fastest.gpu_hours]
    if not thrifty:
        return fastest, (f"it is the fastest ({duration(fastest.seconds)}, {fastest.gpu_hours:.3g} GPU-hours) and "
                         f"none within {NEAR_FASTEST:.0%} of its time saves {FEWER_GPU_HOURS:.0%} of its GPU-hours")
    best = min(thrifty, key=lambda c: (c.gpu_hours, c.seconds))
    slower = best.seconds / fastest.seconds - 1
    saved = 1 - best.gpu_hours / fastest.gpu_hours
    return best, (f"it is within {slower:.0%} of the fastest ({fastest.cluster} B={fastest.batch}, "
                  f"{duration(fastest.seconds)}) at {saved:.0%} fewer GPU-hours "
                  f"({best.gpu_hours:.3g} against {fastest.gpu_hours:.3g})")


def rank(spec: JobSpec, profiles: Sequence[ClusterProfile], reference: Reference, data_size: int,
         measured: Callable[[str, str, int, str], Any] | None = None) -> Ranking:
    """Candidates by predicted time and the pick; PlanError when the planner places none."""
    placed, refused = candidates(spec, profiles, reference, data_size, measured)
    if not placed:
        batches, first = candidate_batches(reference.b_noise, data_size), refused[0]
        raise PlanError(f"no cluster can place any batch from {batches[0]} to {batches[-1]}; e.g. "
                        f"{first.cluster} B={first.batch}: {first.reason}")
    pick, why = choose(placed)
    ordered = tuple(sorted(placed, key=lambda c: (c.seconds, c.gpu_hours)))
    return Ranking(reference, data_size, ordered, tuple(refused), pick, why)


def assumptions(ref: Reference) -> tuple[str, ...]:
    return (
        f"S(B) = S_min (1 + B_noise/B) (McCandlish et al. 2018, eq. 2.11), B_noise {number(ref.b_noise)} "
        f"({ref.estimator})",
        f"S_min = S(B0) / (1 + B_noise/B0) = {ref.steps} / (1 + {number(ref.b_noise)}/{ref.batch}) = "
        f"{number(ref.s_min)} steps, from the job's own run: {ref.steps_from}",
        "time = S(B) x the planner's step time of the shape (GPUs x per-GPU batch x k; measured "
        "throughput where jobs ran on the profile, else the hardware table); start-up and "
        "validations are not counted; GPU-hours = time x GPUs",
        "the target, the LR schedule's quality and B_noise are taken to be the same at every batch",
    )


def render(ranking: Ranking, job: str) -> str:
    """The text of ``larsctl plan --from-noise``: assumptions, the table by time, refusals, the pick."""
    ref = ranking.reference
    lines = [f"Predicted time to the target of {job} (B0 {ref.batch}, S(B0) {ref.steps} steps)", ""]
    lines += [f"- {a}" for a in assumptions(ref)]
    lines.append("")
    rows = [(c.cluster, str(c.batch), c.shape, str(c.gpus), f"{c.steps:,.0f}", f"{c.step_seconds * 1e3:.1f} ms",
             duration(c.seconds), f"{c.gpu_hours:.3g}", "measured" if c.throughput.startswith("measured")
             else "table") for c in ranking.candidates]
    lines.append(render_table(("Cluster", "Batch", "Shape", "GPUs", "Steps S(B)", "Step", "Time",
                               "GPU-hours", "Throughput"), rows))
    if ranking.refused:
        lines += ["", "Not placed by the planner:"]
        lines += [f"  {r.cluster} B={r.batch}: {r.reason}" for r in ranking.refused]
    p = ranking.pick
    lines += ["", f"Rule: {PICK_RULE}.",
              f"pick: {p.cluster} B={p.batch} ({p.shape}) because {ranking.why}"]
    return "\n".join(lines)


__all__ = ["FEWER_GPU_HOURS", "NEAR_FASTEST", "PICK_RULE", "SPAN", "BatchChoice", "Candidate",
           "Ranking", "Reference", "Refused", "at_batch", "candidate_batches", "choose", "rank",
           "recommended_batch", "render"]
