"""The text of ``larsctl sweep report``: a ``ScalingReport`` (larsctl.results.scaling) as
tables and lines, each critical batch named with its definition."""
from __future__ import annotations

from larsctl.format import DASH, number, render_table
from larsctl.results.critical_batch import MCCANDLISH, REGIMES_TEXT, ZHANG
from larsctl.results.noise import ESTIMATOR_TEXT
from larsctl.results.scaling import OptimizerScaling, ScalingReport

# BatchResult.edge: where the best LR sits in its batch's grid, when the optimum may lie beyond it.
EDGE_MARKS = {"low": " (low edge)", "high": " (high edge)", "only": " (only LR)"}
EDGE_NOTE = ("An LR at an edge of its grid is a best LR the grid may not contain: that batch's steps are "
             "an upper bound, not the minimum.")


def render(report: ScalingReport, *, markdown: bool = True, lr_table: bool = True) -> str:
    """The text of ``larsctl sweep report``: per optimizer the steps table, every LR cell, the fit,
    both critical-batch definitions, the noise-scale prediction and the regimes."""
    t = report.target
    lines = [f"Steps to {t}: the step of each run's first {t.kind} record meeting it; per batch "
             "and LR the median over seeds (fewer than half the seeds reaching it: not reached); "
             "best LR = smallest median.", ""]
    for o in report.optimizers:
        lines += [f"## {o.optimizer}", "", _batch_table(o, markdown)]
        if lr_table:
            lines += ["", _lr_table(o, markdown)]
        lines += ["", *_fit_lines(o), "", *_critical_batch_lines(o), ""]
    lines.append(REGIMES_TEXT)
    pending = report.unfinished_misses
    if pending:
        lines.append(f"{len(pending)} run{'s' * (len(pending) != 1)} not finished and not at the "
                     f"target yet, counted as not reached: {', '.join(r.job_id for r in pending)}")
    return "\n".join(lines)


def _batch_table(o: OptimizerScaling, markdown: bool) -> str:
    """A row a batch: its best LR, how many seeds reached, the medians, the fit and regime."""
    regimes = {r.effective_batch: r for r in o.regimes}
    rows = []
    for b in o.batches:
        r = regimes.get(b.effective_batch)
        best = b.best
        rows.append((str(b.effective_batch), number(b.best_lr) + EDGE_MARKS.get(b.edge, ""),
                     f"{best.reached}/{len(best.seeds)}" if best else DASH,
                     number(b.median_steps, 6), number(b.median_examples),
                     number(r.fitted_steps, 6) if r else DASH, r.regime if r else DASH))
    table = render_table(("Batch", "Best LR", "Seeds reached", "Median steps", "Examples",
                          "Fitted steps", "Regime"), rows, markdown=markdown)
    open_edges = [b for b in o.batches if b.edge is not None]
    if not open_edges:
        return table
    return table + "\n\n" + (f"{EDGE_NOTE} Batches: {', '.join(str(b.effective_batch) for b in open_edges)}; "
                              "`larsctl sweep resume SWEEP` grows their grids.")


def _lr_table(o: OptimizerScaling, markdown: bool) -> str:
    """A row an LR cell, the best LR of its batch starred, with every seed's steps."""
    rows = [(str(c.effective_batch), number(c.lr) + (" *" if b.best is c else ""),
             f"{c.reached}/{len(c.seeds)}", number(c.median_steps, 6),
             " ".join(DASH if s is None else str(s) for s in c.steps))
            for b in o.batches for c in b.cells]
    return render_table(("Batch", "LR (* best)", "Seeds reached", "Median steps",
                         "Steps per seed"), rows, markdown=markdown)


def _fit_lines(o: OptimizerScaling) -> list[str]:
    f = o.fit
    if f is None:
        return [o.no_fit_reason]
    return [f"Fit S(B) = S_min (1 + B_crit/B), least squares on ln S over {len(f.batches)} "
            f"batches (residual RMS of ln S {f.rms_log:.3f}):",
            f"  S_min = {number(f.s_min)} steps (95% {_interval(f.s_min_interval)}), "
            f"E_min = S_min B_crit = {number(f.e_min)} examples",
            f"  B_crit = {number(f.b_crit)} (95% {_interval(f.b_crit_interval)})  "
            f"[McCandlish: S(B_crit) = 2 S_min]",
            f"  {f.interval_note}"]


def _critical_batch_lines(o: OptimizerScaling) -> list[str]:
    """Both definitions, and the noise scale's prediction beside the fitted B_crit."""
    f = o.fit
    lines = ["Critical batch by definition:",
             f"- {MCCANDLISH}: {number(f.b_crit) if f else DASH}",
             f"- {ZHANG}:",
             f"    under the fitted model (0.2 B_crit): {number(o.zhang_model)}",
             f"    {o.zhang_note}" + (f": {number(o.zhang_measured)}" if o.zhang_measured else "")]
    if o.predicted_b_noise is not None:
        ratio = (f"fitted B_crit / predicted = {number(o.b_crit_over_predicted, 3)}"
                 if o.b_crit_over_predicted is not None else "no fit to compare")
        lines.append(f"Noise-scale prediction B_noise ({_estimator_text(o.predicted_estimator)}; averaged "
                     f"over progress, McCandlish): {number(o.predicted_b_noise)}; {ratio} (as measured, "
                     "not tuned)")
    return lines


def _estimator_text(names: str | None) -> str:
    """The noise scale(s) a prediction used, in words; B_simple when not said (a number given by hand)."""
    if not names:
        return ESTIMATOR_TEXT["sgd"]
    return " and ".join(ESTIMATOR_TEXT.get(name, name) for name in names.split(", "))


def _interval(pair: tuple[float, float] | None) -> str:
    return DASH if pair is None else f"{number(pair[0])}-{number(pair[1])}"
