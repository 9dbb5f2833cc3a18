"""The figure of ``larsctl sweep report --out``: a ``ScalingReport`` (larsctl.results.scaling)
in four panels, one colour per optimizer on shared axes.

The one part of the scaling analysis that makes bytes: matplotlib on the Agg canvas,
imported only when drawing.
"""
from __future__ import annotations

import numpy as np

from larsctl.format import number
from larsctl.results.critical_batch import ZHANG_EXCESS
from larsctl.results.scaling import OptimizerScaling, ScalingReport


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
    axes = fig.subplots(2, 2, squeeze=False).ravel()
    ax_steps, ax_pareto, ax_linear, ax_lr = axes
    colours = rcParams["axes.prop_cycle"].by_key()["color"]  # tab10, as plots.py
    all_batches = [b.effective_batch for o in report.optimizers for b in o.batches]
    curve_b = np.geomspace(min(all_batches) / 1.5, max(all_batches) * 1.5, 200)
    reached_any = any(b.best is not None for o in report.optimizers for b in o.batches)
    for index, o in enumerate(report.optimizers):
        colour = colours[index % len(colours)]
        _plot_steps(ax_steps, o, colour, curve_b, reached_any)
        _plot_pareto(ax_pareto, o, colour, curve_b)
        _plot_over_linear(ax_linear, o, colour, curve_b)
        lr_pairs = [(b.effective_batch, b.best_lr) for b in o.batches if b.best is not None]
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
    _label(axes, report, reached_any)
    return fig


def figure_png(report: ScalingReport, width_px: int = 1600, height_px: int = 1000,
               dpi: int = 100) -> bytes:
    """``figure`` as PNG bytes of exactly ``width_px`` x ``height_px``."""
    from larsctl.results.plots import png_bytes

    return png_bytes(figure(report, width_px, height_px, dpi))


def _medians(o: OptimizerScaling):
    """The batches whose best LR reached the target, their sizes and best-LR medians."""
    reached = [b for b in o.batches if b.best is not None]
    return reached, [b.effective_batch for b in reached], [b.median_steps for b in reached]


def _plot_steps(ax, o: OptimizerScaling, colour, curve_b: np.ndarray, reached_any: bool) -> None:
    """Each seed (faint) and the best-LR medians; the batches that missed as x on the top edge;
    the fit with its slope -1 asymptote and B_crit, or without a fit a slope -1 line."""
    reached, xs, ys = _medians(o)
    seed_x = [b.effective_batch for b in reached for s in b.best.steps if s is not None]
    seed_y = [s for b in reached for s in b.best.steps if s is not None]
    ax.plot(seed_x, seed_y, ls="none", marker=".", ms=4, color=colour, alpha=0.35,
            label=f"_{o.optimizer} seeds")
    ax.plot(xs, ys, ls="none", marker="o", ms=6, color=colour,
            label=f"{o.optimizer} best-LR median")
    missed = [b.effective_batch for b in o.batches if b.best is None]
    if missed and reached_any:  # along the top edge: no step count to show
        ax.plot(missed, [0.96] * len(missed), ls="none", marker="x", ms=7, color=colour,
                transform=ax.get_xaxis_transform(), label=f"{o.optimizer} not reached (top edge)")
    if o.fit:
        f = o.fit
        ax.plot(curve_b, f.predict(curve_b), color=colour, lw=1.5,
                label=f"{o.optimizer} fit, B_crit={number(f.b_crit, 3)}")
        ax.plot(curve_b, f.s_min * f.b_crit / curve_b, color=colour, lw=1, ls=":",
                label=f"{o.optimizer} slope -1 (S_min B_crit/B)")
        ax.axvline(f.b_crit, color=colour, lw=0.8, ls="-.", alpha=0.6)
    elif xs:  # slope -1 through the smallest batch that reached
        ax.plot(curve_b, ys[0] * xs[0] / curve_b, color=colour, lw=1, ls=":",
                label=f"{o.optimizer} slope -1")


def _plot_pareto(ax, o: OptimizerScaling, colour, curve_b: np.ndarray) -> None:
    """Examples (S B) against steps S: measured per batch, and along the fit."""
    _, xs, ys = _medians(o)
    if o.fit:
        s_curve = o.fit.predict(curve_b)
        ax.plot(s_curve, s_curve * curve_b, color=colour, lw=1.5, label=f"{o.optimizer} fit")
    ax.plot(ys, [s * b for s, b in zip(ys, xs)], ls="-", lw=0.6, marker="o", ms=6,
            color=colour, alpha=0.9, label=f"{o.optimizer} measured")
    for b, s in zip(xs, ys):
        ax.annotate(f"B={b}", (s, s * b), textcoords="offset points", xytext=(4, 4),
                    fontsize="x-small", color=colour)


def _plot_over_linear(ax, o: OptimizerScaling, colour, curve_b: np.ndarray) -> None:
    """Steps x B over the smallest reached batch's: 1 is linear scaling, 1.2 Zhang's limit."""
    _, xs, ys = _medians(o)
    if o.fit:
        # fitted S(B) B / S(B0) B0 = (B + B_crit) / (B0 + B_crit), B0 the smallest reached batch
        ax.plot(curve_b, (curve_b + o.fit.b_crit) / (xs[0] + o.fit.b_crit), color=colour,
                lw=1.5, label=f"{o.optimizer} fit")
    if xs:
        ax.plot(xs, [s * b / (ys[0] * xs[0]) for s, b in zip(ys, xs)], ls="-", lw=0.6,
                marker="o", ms=6, color=colour, label=f"{o.optimizer} measured")


def _label(axes, report: ScalingReport, reached_any: bool) -> None:
    """Titles, axis labels, grids; log-log axes and legends, or a note that nothing reached."""
    titles = ((f"Steps to {report.target} (McCandlish fit)", "effective batch B", "steps"),
              ("Examples vs steps (Pareto)", "steps", "examples"),
              ("Steps over linear scaling from the smallest batch", "effective batch B",
               "steps x B / (S B)_smallest"),
              ("Best LR", "effective batch B", "learning rate"))
    for ax, (title, xlabel, ylabel) in zip(axes, titles):
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
