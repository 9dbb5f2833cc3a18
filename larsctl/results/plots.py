"""The report figure: one panel per metric, one colour per job, against epochs.

Like the reference README's "training process with TensorBoard" figure, but
drawn by matplotlib so it can be pasted into a paper or a chat.  Figures are
built on the Agg canvas directly (no pyplot, no global backend state), so a
report renders the same on a login node with no display.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import offset_copy

from larsctl.results import markers, tables
from larsctl.results.runs import TAGS, Run, Summary


@dataclass(frozen=True)
class Curve:
    tag: str
    style: str  # matplotlib line style
    name: str  # shown in the style legend when a panel has several curves
    marker: str | None = None  # validation points: one per epoch, visible even when alone
    smooth: bool = False  # per-step training values, noisy enough to want --smoothing


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    curves: tuple[Curve, ...]
    percent: bool = False
    from_zero: bool = False  # throughput: differences read true only from a zero baseline
    log: bool = False  # values that span decades (B_simple); values <= 0 are left out and counted


_TITLES = {
    "train/loss": ("Training loss", "loss", False),
    "train/accuracy": ("Training top-1", "top-1 (%)", True),
    "train/lr": ("Learning rate", "learning rate", False),
    "train/images_per_sec": ("Throughput", "images/s", False),
    "train/noise_scale": ("Gradient noise scale B_simple", "B_simple (examples)", False),
    "val/loss": ("Validation loss", "loss", False),
    "val/accuracy": ("Validation top-1", "top-1 (%)", True),
    "val/top5": ("Validation top-5", "top-5 (%)", True),
}

_LOG_TAGS = ("train/noise_scale",)  # B_simple spans decades over a run and between batches

DEFAULT_PANELS = (
    Panel("Training loss", "loss", (Curve("train/loss", "-", "train", smooth=True),)),
    Panel("Top-1 and top-5 accuracy", "accuracy (%)",
          (Curve("train/accuracy", ":", "train top-1", smooth=True),
           Curve("val/accuracy", "-", "val top-1", "o"),
           Curve("val/top5", "--", "val top-5", "^")), percent=True),
    Panel("Learning rate", "learning rate", (Curve("train/lr", "-", "lr"),)),
    Panel("Throughput", "images/s", (Curve("train/images_per_sec", "-", "images/s", smooth=True),),
          from_zero=True),
)


# Drawn by default for jobs that measured it (trainer/gns.py).
NOISE_PANEL = Panel("Gradient noise scale B_simple", "B_simple (examples)",
                    (Curve("train/noise_scale", "-", "B_simple"),), log=True)


def default_panels(runs: list[Run]) -> tuple[Panel, ...]:
    """The four default panels, and the noise-scale curve when any run has one."""
    if any(run.curves.get("train/noise_scale") for run in runs):
        return (*DEFAULT_PANELS, NOISE_PANEL)
    return DEFAULT_PANELS


def panels_for(metrics: tuple[str, ...]) -> tuple[Panel, ...]:
    """One panel per requested tag (``--metric``), or the default four panels."""
    if not metrics:
        return DEFAULT_PANELS
    unknown = [m for m in metrics if m not in _TITLES]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; expected one of {', '.join(TAGS)}")
    panels = []
    for tag in dict.fromkeys(metrics):  # keep order, drop repeats
        title, ylabel, pct = _TITLES[tag]
        validation = tag.startswith("val/")
        curve = Curve(tag, "-", tag, "o" if validation else None,
                      smooth=not validation and tag != "train/lr")
        panels.append(Panel(title, ylabel, (curve,), percent=pct,
                            from_zero=tag == "train/images_per_sec", log=tag in _LOG_TAGS))
    return tuple(panels)


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: a debiased exponential moving average (weight 0 = raw)."""
    out, average = [], 0.0
    for n, value in enumerate(values, 1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** n))
    return out


def build_figure(runs: list[Run], panels: tuple[Panel, ...], width_px: int, height_px: int,
                 dpi: int, smoothing: float = 0.0) -> Figure:
    """The figure, exactly ``width_px`` x ``height_px`` pixels when saved at ``dpi``.

    With ``smoothing`` > 0 the per-step training curves are drawn smoothed over
    a faint copy of the raw values, as TensorBoard shows them.
    """
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    cols = 1 if len(panels) == 1 else 2
    rows = -(-len(panels) // cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for extra in axes[len(panels):]:
        extra.remove()
    for ax in axes[1:len(panels)]:  # one x range: a marker sits at the same place on every panel
        ax.sharex(axes[0])
    # Epochs make runs of different batch sizes comparable; steps are the
    # fallback for runs whose epoch length is unknown (event files alone).
    by_epoch = all(run.epochs(tag) is not None for run in runs for tag in TAGS)
    colours = _colours()
    handles = []
    for index, run in enumerate(runs):
        colour = colours[index % len(colours)]
        label = _label(run, runs)
        handles.append(Line2D([], [], color=colour, lw=2, label=label))
        for ax, panel in zip(axes, panels):
            for curve in panel.curves:
                _draw_curve(ax, panel, curve, run, label, colour, by_epoch, smoothing)
    for ax, panel in zip(axes, panels):
        _dress(ax, panel, by_epoch)
    placed = _draw_markers(axes[:len(panels)], runs, colours, by_epoch)
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 6),
               frameon=False)
    kinds = {marker.kind for _, marker, _ in placed}
    if kinds:  # say which marker style is which
        fig.legend(handles=[Line2D([], [], color="0.3", label=_MARKER_LEGEND[kind], **_line_style(kind))
                            for kind in _MARKER_LEGEND if kind in kinds],
                   loc="outside lower center", ncols=3, frameon=False, fontsize="small")
        fig.get_layout_engine().execute(fig)  # the panels' final widths: how many labels fit side by side
        for ax in axes[:len(panels)]:
            _label_markers(fig, ax, placed)
    return fig


def _draw_curve(ax, panel: Panel, curve: Curve, run: Run, label: str, colour: str, by_epoch: bool,
                smoothing: float) -> None:
    points = run.curves.get(curve.tag, [])
    if not points:
        return
    xs = run.epochs(curve.tag) if by_epoch else [p.step for p in points]
    ys = [100 * p.value if panel.percent else p.value for p in points]
    if panel.log:
        kept = [(x, y) for x, y in zip(xs, ys) if y > 0]
        if len(kept) < len(ys):
            _note(ax, f"{label}: {len(ys) - len(kept)} value{'s' * (len(ys) - len(kept) != 1)} <= 0 "
                      "not drawn (log axis)", colour)
        xs, ys = [x for x, _ in kept], [y for _, y in kept]
    if smoothing and curve.smooth:
        ax.plot(xs, ys, ls=curve.style, color=colour, lw=1.0, alpha=0.25,
                label=f"_raw {label} {curve.name}")  # "_": not in any legend
        ys = smooth(ys, smoothing)
    ax.plot(xs, ys, ls=curve.style, color=colour, lw=1.6 if curve.marker else 1.2,
            alpha=0.9, marker=curve.marker, ms=4, label=f"{label} {curve.name}")


def _note(ax, text: str, colour: str) -> None:
    """A line of small text in the panel's lower left corner, one above the other."""
    ax.text(0.01, 0.02 + 0.07 * len(ax.texts), text, transform=ax.transAxes, fontsize="x-small",
            color=colour, ha="left", va="bottom",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})


def _dress(ax, panel: Panel, by_epoch: bool) -> None:
    ax.set_title(panel.title)
    ax.set_xlabel("epoch" if by_epoch else "step")
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    if panel.log:
        ax.set_yscale("log")
    if panel.from_zero and ax.has_data():
        ax.set_ylim(bottom=0)
    if len(panel.curves) > 1:  # say which line style is which metric
        ax.legend(handles=[Line2D([], [], color="0.35", ls=c.style, marker=c.marker, label=c.name)
                           for c in panel.curves], loc="best", fontsize="small")


# Restarts, restarts with a new shape and the end of warmup: vertical lines in the job's
# colour on every panel, each labelled small and rotated at the top of the panel.
_MARKER_STYLE = {markers.RESTART: ((0, (4, 3)), 0.9, 0.75), markers.RESHAPE: ("-.", 1.8, 0.95),
                 markers.WARMUP: (":", 1.2, 0.8)}  # line style, width, alpha
_MARKER_LEGEND = {markers.RESTART: "restart (labelled: why the run before it ended)",
                  markers.RESHAPE: "restart with a new shape (before -> after)",
                  markers.WARMUP: "end of the learning-rate warmup"}
_MARKER_FONT_PT = 6.5


def _line_style(kind: str) -> dict:
    style, width, alpha = _MARKER_STYLE[kind]
    return {"ls": style, "lw": width, "alpha": alpha}


def _draw_markers(axes, runs: list[Run], colours: list[str], by_epoch: bool) -> list[tuple]:
    """Every run's markers as lines on every panel, at the x its curves use; (x, Marker, colour)
    of each.  A marker past the run's last step (a warmup it never finished) is not drawn."""
    placed = []
    for index, run in enumerate(runs):
        spe = run.steps_per_epoch if by_epoch else None
        for marker in markers.run_markers(run):
            if marker.step <= run.last_step:
                placed.append((marker.step / spe if spe else marker.step, marker, colours[index % len(colours)]))
    for ax in axes:
        for x, marker, colour in placed:
            style, width, alpha = _MARKER_STYLE[marker.kind]
            ax.add_collection(LineCollection([[(x, 0), (x, 1)]], transform=ax.get_xaxis_transform(),
                                             colors=colour, linestyles=[style], linewidths=width, alpha=alpha,
                                             zorder=1.5, gid=marker.kind), autolim=False)
    return placed


def _label_markers(fig: Figure, ax, placed: list[tuple]) -> None:
    """Small rotated labels at least a label's width apart: a marker closer than that to the
    label before it adds "(+N)" to it instead (a reshape takes the label over: it moves right,
    away from the one before); the segments table lists them all."""
    low, high = ax.get_xlim()
    gap = (high - low) * 1.5 * _MARKER_FONT_PT * fig.dpi / 72 / max(ax.bbox.width, 1.0)
    labels: list[list] = []  # [x, marker, colour, markers under this label]
    for x, marker, colour in sorted((p for p in placed if low <= p[0] <= high), key=lambda p: p[0]):
        if not labels or x - labels[-1][0] >= gap:
            labels.append([x, marker, colour, 1])
            continue
        labels[-1][3] += 1
        if marker.kind == markers.RESHAPE and labels[-1][1].kind != markers.RESHAPE:
            labels[-1][:3] = [x, marker, colour]
    beside = offset_copy(ax.get_xaxis_transform(), fig, x=-1.5, units="points")  # just left of the line
    for x, marker, colour, count in labels:
        more = f" (+{count - 1})" if count > 1 else ""
        text = ax.text(x, 0.98, marker.text + more, transform=beside, rotation=90, ha="right", va="top",
                       fontsize=_MARKER_FONT_PT, color=colour, clip_on=True, gid=f"{marker.kind}-label",
                       bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.6, "pad": 0.5})
        text.set_in_layout(False)  # inside the panel: the layout was made without them


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No bbox_inches="tight": it would change the pixel size the user asked for.
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def html_page(png: bytes, summaries: list[Summary], title: str = "larsctl report",
              runs: list[Run] = ()) -> str:
    """A self-contained page: the figure (embedded), the table of final numbers and, per job of
    ``runs`` that restarted, its segments (or, without segment records, its restarts)."""
    rows = [tables.report_row(s) for s in tables.sort_by_batch(summaries)]
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin-top: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }}
th {{ background: #f3f3f3; }}
td:first-child, th:first-child {{ text-align: left; }}
table.segments {{ font-size: small; margin-top: 0.5em; }}
table.segments td:last-child {{ text-align: left; }}
h2 {{ font-size: 1em; margin-top: 1.5em; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<img alt="training curves" src="data:image/png;base64,{image}">
{_html_table(tables.REPORT_COLUMNS, rows)}
{_segments_html(runs)}
</body>
</html>
"""


def _html_table(header, rows, css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<table{attribute}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _segments_html(runs: list[Run]) -> str:
    parts = []
    for run in runs:
        if run.segments:
            parts.append(f"<h2>Segments of {html.escape(run.name)}</h2>\n"
                         + _html_table(tables.SEGMENT_COLUMNS, [tables.segment_row(s) for s in run.segments],
                                       "segments"))
        elif not run.segments:
            restarts = [m for m in markers.run_markers(run) if m.kind != markers.WARMUP]
            if restarts:
                parts.append(f"<p>{html.escape(run.name)}: {html.escape(tables.restarts_line(restarts))}</p>")
    return "\n".join(parts)


def _colours() -> list[str]:
    # matplotlib's default cycle (tab10): ten colours that stay distinct in print.
    from matplotlib import rcParams

    return rcParams["axes.prop_cycle"].by_key()["color"]


def _label(run: Run, runs: list[Run]) -> str:
    """``B=<effective batch> <optimizer>``, with the job name when two runs would read alike."""
    same = [other for other in runs if other.label == run.label]
    return f"{run.label} ({run.name})" if len(same) > 1 else run.label
