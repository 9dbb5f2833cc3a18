"""Regimes and the two definitions of "critical batch", each named where it is printed.

From the fit S(B) = S_min (1 + B_crit/B) (``larsctl.results.scaling_fit``) each batch is
in one of three regimes (``REGIME_FACTOR`` = 3):

* perfect scaling      B <= B_crit / 3: steps within 33% of the linear-scaling line
                       S_min B_crit / B (doubling the batch nearly halves the steps);
* diminishing returns  B_crit / 3 < B < 3 B_crit;
* maximal parallelism  B >= 3 B_crit: steps within 33% of S_min (a bigger batch barely
                       saves a step).

The two definitions: McCandlish et al.'s B_crit, where S = 2 S_min (the fit parameter),
and Zhang et al. 2024 ("How Does Critical Batch Size Scale in Pre-training?", arXiv
2410.21676), the batch where the steps exceed linear scaling by 20% (0.2 B_crit under the
fitted model, and measured from the best-LR medians against the smallest batch's linear
extrapolation: ``zhang_empirical``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

REGIME_FACTOR = 3.0  # perfect scaling B <= B_crit/3, maximal parallelism B >= 3 B_crit
ZHANG_EXCESS = 0.2  # Zhang et al. 2024: steps 20% over linear scaling

PERFECT, DIMINISHING, MAXIMAL = "perfect scaling", "diminishing returns", "maximal parallelism"

MCCANDLISH = ("McCandlish et al. 2018 (arXiv 1812.06162): B_crit is the batch where steps "
              "S = 2 S_min, the fit parameter of S(B) = S_min (1 + B_crit/B)")
ZHANG = ("Zhang et al. 2024 (arXiv 2410.21676): the critical batch is where steps exceed "
         "linear scaling by 20%")
REGIMES_TEXT = (f"Regimes from the fit: {PERFECT} B <= B_crit/3 (steps within 33% of the "
                f"linear-scaling line S_min B_crit/B), {MAXIMAL} B >= 3 B_crit (steps within 33% "
                f"of S_min), {DIMINISHING} between.")


@dataclass(frozen=True)
class Regime:
    """One batch of the sweep against the fit: its regime, and its steps over the two limits."""

    effective_batch: int
    regime: str
    fitted_steps: float
    measured_steps: float | None  # the best-LR median; None: not reached
    over_linear: float  # fitted S / (S_min B_crit / B) = 1 + B / B_crit
    over_min: float  # fitted S / S_min = 1 + B_crit / B


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
