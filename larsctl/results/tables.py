"""The results table of ``larsctl compare``, in the form of the reference README's table.

Pure: summaries in, text out.  The text is a Markdown pipe table whose columns
line up in a terminal too, so it pastes into a README or an issue as is.
"""
from __future__ import annotations

from larsctl.format import (
    DASH,
    duration,
    integer,
    number,
    percent,
    power_form,
    render_table,
    warmup_form,
    with_form,
)
from larsctl.results.markers import Marker
from larsctl.results.runs import Summary

COLUMNS = ("Job", "Effective batch", "Batch", "Base LR", "Warmup epochs", "Epsilon", "Optimizer",
           "Epochs", "Val accuracy")
# The HTML report's table: the settings, then every final number.
REPORT_COLUMNS = ("Job", "Effective batch", "Batch", "Base LR", "Warmup epochs", "Epsilon",
                  "Optimizer", "GPUs", "Epochs", "Best val top-1", "Last val top-1", "Last val top-5",
                  "Wall time", "GPU-hours")
# A job's segments (larsctl.results.segments), under the report's figure and in its text summary.
SEGMENT_COLUMNS = ("Segment", "Shape", "Steps", "Cause", "Detail")


def sort_by_batch(summaries: list[Summary]) -> list[Summary]:
    """Ascending effective batch (unknown last), then by job name."""
    return sorted(summaries, key=lambda s: (s.effective_batch is None, s.effective_batch or 0, s.name))


def power_of_two(value: float | None) -> str:
    """``5.657 (2^2.5)``: how the reference writes base LRs."""
    return with_form(value, power_form)


def warmup(value: float | None) -> str:
    """``0.1562 (10/2^6)``: how the reference writes warmups."""
    return with_form(value, warmup_form)


def compare_row(summary: Summary) -> tuple[str, ...]:
    return (summary.name, integer(summary.effective_batch), integer(summary.per_gpu_batch),
            power_of_two(summary.base_lr), warmup(summary.warmup_epochs), number(summary.epsilon),
            summary.optimizer or DASH, number(summary.epochs, 3), percent(summary.last_val_top1))


def report_row(summary: Summary) -> tuple[str, ...]:
    return (*compare_row(summary)[:7], integer(summary.gpus),
            number(summary.epochs, 3), percent(summary.best_val_top1), percent(summary.last_val_top1),
            percent(summary.last_val_top5), duration(summary.wall_time_s), number(summary.gpu_hours, 3))


def compare_table(summaries: list[Summary]) -> str:
    return render_table(COLUMNS, [compare_row(s) for s in sort_by_batch(summaries)], markdown=True)


def segment_row(segment) -> tuple[str, ...]:
    """Number, shape (nodes x GPUs per node x per-GPU batch x accumulation), first-last step,
    cause (``running`` while it runs) and the one-line detail of a Segment."""
    steps = DASH
    if segment.last_step is not None:
        steps = f"{'?' if segment.first_step is None else segment.first_step}-{segment.last_step}"
    return (str(segment.number), segment.shape_text, steps, segment.cause or "running", segment.detail)


def segment_table(segments: list) -> str:
    return render_table(SEGMENT_COLUMNS, [segment_row(s) for s in segments])


def restarts_line(restarts: list[Marker]) -> str:
    """``restarted at step 7 (preempted), step 12 (restart; 2x16x1 -> 1x16x2)``: a run without
    segment records, from its resume events."""
    return "restarted at " + ", ".join(
        f"step {m.step} ({m.label}{'; ' + m.shape if m.shape else ''})" for m in restarts)
