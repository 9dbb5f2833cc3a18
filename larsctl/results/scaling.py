"""Steps to a target across batch sizes: the analysis of a sweep, per optimizer.

A sweep trains the same model at several effective batches B, each with a few LRs and
seeds.  ``analyse`` takes its runs and a target (``val/accuracy>=0.9``) and returns a
``ScalingReport``; the parts it is made of live in their own modules:

* ``larsctl.results.steps``           each run's steps to the target; per (optimizer,
                                      batch, LR) the median over seeds; the best LR;
* ``larsctl.results.scaling_fit``     S(B) = S_min (1 + B_crit / B) fitted to the best-LR
                                      medians, with a bootstrap over seeds;
* ``larsctl.results.critical_batch``  the regimes from the fit, and the two definitions of
                                      "critical batch" (McCandlish et al., Zhang et al.);
* ``larsctl.results.scaling_text``    the report's text (``larsctl sweep report``);
* ``larsctl.results.scaling_figure``  its figure.

Pure: runs in, frozen dataclasses out.  Errors are ValueError naming the bad value.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from larsctl.results.critical_batch import (MCCANDLISH, REGIMES_TEXT, ZHANG, Regime, regime,
                                            zhang_empirical)
from larsctl.results.scaling_fit import (BOOTSTRAP, BOOTSTRAP_SEED, MIN_FIT_BATCHES, Fit,
                                         fit_batches)
from larsctl.results.steps import (BatchResult, RunResult, SweepRun, Target, batch_results,
                                   finite_number, measure, parse_target)


@dataclass(frozen=True)
class OptimizerScaling:
    """One optimizer's batches, fit, regimes and critical batches."""

    optimizer: str
    batches: tuple[BatchResult, ...]  # ascending batch
    fit: Fit | None
    no_fit_reason: str | None
    regimes: tuple[Regime, ...]  # every batch of the sweep, when there is a fit
    zhang_model: float | None  # 0.2 B_crit (Zhang's definition under the fitted model)
    zhang_measured: float | None  # from the best-LR medians (None: see zhang_note)
    zhang_note: str
    predicted_b_noise: float | None  # given to analyse()
    predicted_estimator: str | None  # which noise scale it is (noise.ESTIMATORS names), given to analyse()
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
                          median_examples=b.median_examples, edge=b.edge)
            if o.fit is not None:
                od["fit"].update(e_min=o.fit.e_min, zhang_model=o.fit.zhang_b)
        for r, rd in zip(self.runs, d["runs"]):
            rd["examples"] = r.examples
        d["definitions"] = {"b_crit": MCCANDLISH, "zhang": ZHANG, "regimes": REGIMES_TEXT}
        return d


def analyse(runs: Iterable[SweepRun], target: Target | str, *,
            predicted_b_noise: float | Mapping[str, float] | None = None,
            predicted_estimator: str | Mapping[str, str] | None = None,
            n_boot: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> ScalingReport:
    """Steps to ``target`` per run, the best-LR medians per (optimizer, batch), the fit with its
    bootstrap interval, the regimes and both critical-batch definitions, per optimizer.

    ``predicted_b_noise``: the noise scale's prediction (one number, or one per optimizer),
    compared as measured with the fitted B_crit; ``predicted_estimator``: which noise scale that
    is (the names of noise.ESTIMATORS, as ``noise_prediction`` gives them).  ``n_boot`` resamples with
    ``numpy.random.default_rng(seed)``: the same inputs give the same report.
    """
    if isinstance(target, str):
        target = parse_target(target)
    if not isinstance(n_boot, int) or n_boot < 0:
        raise ValueError(f"n_boot: expected a non-negative integer, got {n_boot!r}")
    results = measure(list(runs), target)
    if not results:
        raise ValueError("runs: the sweep has no runs")
    optimizers = tuple(_optimizer_scaling(name, batches, target, predicted_b_noise, predicted_estimator,
                                          n_boot, seed)
                       for name, batches in batch_results(results).items())
    return ScalingReport(target, optimizers, tuple(results), n_boot, seed)


def _optimizer_scaling(name: str, batches: Sequence[BatchResult], target: Target,
                       predicted_b_noise, predicted_estimator, n_boot: int, seed: int) -> OptimizerScaling:
    reached = [b for b in batches if b.best is not None]
    fit, reason, regimes = None, None, ()
    if len(reached) >= MIN_FIT_BATCHES:
        fit = fit_batches(batches, n_boot, seed)
        regimes = tuple(_regime(b, fit) for b in batches)
    else:
        which = ", ".join(str(b.effective_batch) for b in reached) or "none"
        reason = (f"no fit: {len(reached)} of {len(batches)} batch sizes reached {target} "
                  f"(B = {which}); the fit needs at least {MIN_FIT_BATCHES}")
    zhang, note = zhang_empirical([b.effective_batch for b in reached],
                                  [b.median_steps for b in reached])
    predicted = _prediction(predicted_b_noise, name)
    return OptimizerScaling(
        optimizer=name, batches=tuple(batches), fit=fit, no_fit_reason=reason, regimes=regimes,
        zhang_model=fit.zhang_b if fit else None, zhang_measured=zhang, zhang_note=note,
        predicted_b_noise=predicted,
        predicted_estimator=_per_optimizer(predicted_estimator, name) if predicted else None,
        b_crit_over_predicted=fit.b_crit / predicted if fit and predicted else None)


def _regime(batch: BatchResult, fit: Fit) -> Regime:
    b = batch.effective_batch
    return Regime(b, regime(b, fit.b_crit), fit.predict(b), batch.median_steps,
                  1.0 + b / fit.b_crit, 1.0 + fit.b_crit / b)


def _per_optimizer(value, optimizer: str):
    """``value`` itself, or its entry for ``optimizer`` when it is a mapping by optimizer name."""
    if isinstance(value, Mapping):
        return {str(k).upper(): v for k, v in value.items()}.get(optimizer)
    return value


def _prediction(predicted_b_noise, optimizer: str) -> float | None:
    value = _per_optimizer(predicted_b_noise, optimizer)
    if value is not None and not (finite_number(value) and value > 0):
        raise ValueError(f"predicted_b_noise ({optimizer}): expected a positive number, got {value!r}")
    return None if value is None else float(value)


def noise_prediction(runs: Iterable[SweepRun], optimizer: str | None = None) -> tuple[float | None, str | None]:
    """The median over runs (of ``optimizer``, or all) of noise.noise_summary(records, its
    optimizer).recommended, and which noise scale that is: the names of noise.ESTIMATORS the runs
    used, joined by ", " when they differ (for LARS the trust-ratio-preconditioned one where the
    run logged it); (None, None) when no run logged a noise scale."""
    from larsctl.results.noise import noise_summary

    values, estimators = [], []
    for run in runs:
        if optimizer is not None and run.optimizer != optimizer.upper():
            continue
        try:
            summary = noise_summary(run.records, run.optimizer)
        except ValueError:
            continue
        values.append(summary.recommended)
        estimators.append(summary.estimator.name)
    if not values:
        return None, None
    return float(np.median(values)), ", ".join(sorted(set(estimators)))


def predicted_b_noise(runs: Iterable[SweepRun], optimizer: str | None = None) -> float | None:
    """noise_prediction's value alone."""
    return noise_prediction(runs, optimizer)[0]
