"""Measured throughput: the images/s finished jobs on a profile really trained at.

The hardware table's figures are orders of magnitude (the cpu row gives 443 img/s per
worker for the demo's ResNet-18 at 32 px; two workers on a 2-core machine train at
about 185 img/s together).  Once jobs have run on a profile, the estimate uses what
they measured for the same model, image size and precision instead, and says so.

Pure: ``job_rate`` (one job's figure: the median of its train records' images/s, so the
windows that also hold a validation and a checkpoint do not pull it down), ``pool``
(the median per GPU or worker over the newest matching jobs) and the records ``Run``
and ``Measured``.  The finished jobs themselves are read by larsctl.jobs.history, which
planning's callers hand to ``resolve_job`` (planning imports nothing of the job layer).

The figure is a job's end-to-end rate (data loading, the allreduce of its own layout,
logging), per GPU; the estimate still adds the modelled allreduce, so a plan from a
measured figure leans long by that much.  Per-GPU batch and data kind are not matched.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

MIN_RECORDS = 3   # train records a job needs before its figure counts
NEWEST = 20       # matching jobs pooled, newest first


@dataclass(frozen=True)
class Run:
    """One finished job's figure: images/s of the whole job (all ranks)."""

    job_id: str
    profile: str
    model: str
    image_size: int
    precision: str
    ranks: int
    images_per_second: float

    @property
    def per_rank(self) -> float:
        return self.images_per_second / self.ranks

    @property
    def key(self) -> tuple[str, int, str]:
        return self.model, self.image_size, self.precision


@dataclass(frozen=True)
class Measured:
    """Images/s per GPU (or CPU worker) pooled over ``jobs`` finished jobs."""

    images_per_second: float
    jobs: int
    profile: str
    model: str
    image_size: int
    precision: str

    def describe(self, unit: str) -> str:
        rate = self.images_per_second
        figure = f"{rate:.1f}" if rate < 100 else f"{rate:,.0f}"
        return (f"measured: {figure} img/s per {unit} from {self.jobs} "
                f"job{'s' if self.jobs != 1 else ''} on profile {self.profile} "
                f"({self.model}, {self.image_size} px, {self.precision})")


def job_rate(records: Iterable[dict]) -> float | None:
    """The median images/s of a job's train records; None with fewer than MIN_RECORDS."""
    rates = [r["images_per_sec"] for r in records
             if r.get("kind") == "train" and isinstance(r.get("images_per_sec"), (int, float))]
    return float(statistics.median(rates)) if len(rates) >= MIN_RECORDS else None


def pool(runs: Iterable[Run], *, profile: str, model: str, image_size: int,
         precision: str) -> Measured | None:
    """The median per-GPU figure of the NEWEST runs (oldest first in ``runs``) that match."""
    key = (model, image_size, precision)
    newest = [r for r in runs if r.profile == profile and r.key == key][-NEWEST:]
    if not newest:
        return None
    rate = float(statistics.median(r.per_rank for r in newest))
    return Measured(rate, len(newest), profile, *key)
