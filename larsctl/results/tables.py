"""The results table of ``larsctl compare``, in the form of the reference README's table.

Pure: summaries in, text out.  The text is a Markdown pipe table whose columns
line up in a terminal too, so it pastes into a README or an issue as is.
"""
from __future__ import annotations

import math

from larsctl.results.runs import Summary

DASH = "-"

COLUMNS = ("Job", "Effective batch", "Batch", "Base LR", "Warmup epochs", "Epsilon",
           "Epochs", "Val accuracy")
# The HTML report's table: the settings, then every final number.
REPORT_COLUMNS = ("Job", "Effective batch", "Batch", "Base LR", "Warmup epochs", "Epsilon",
                  "Optimizer", "GPUs", "Epochs", "Best val top-1", "Last val top-1", "Last val top-5",
                  "Wall time", "GPU-hours")


def sort_by_batch(summaries: list[Summary]) -> list[Summary]:
    """Ascending effective batch (unknown last), then by job name."""
    return sorted(summaries, key=lambda s: (s.effective_batch is None, s.effective_batch or 0, s.name))


def percent(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.2f}%"


def number(value: float | None, digits: int = 4) -> str:
    """Up to ``digits`` significant digits, no trailing zeros (5.657, 0.1562, 1e-05)."""
    if value is None:
        return DASH
    if value == 0:
        return "0.0"
    return f"{value:.{digits}g}"


def power_of_two(value: float | None) -> str:
    """``5.657 (2^2.5)`` when the value is 2 to a multiple of 1/2, as the reference writes LRs."""
    text = number(value)
    if value is None or value <= 0:
        return text
    exponent = math.log2(value)
    if abs(2 * exponent - round(2 * exponent)) < 1e-6 and exponent != 0:
        return f"{text} (2^{round(2 * exponent) / 2:g})"
    return text


def warmup(value: float | None) -> str:
    """``0.1562 (10/2^6)`` when it is 10 over a power of two, the reference's warmup rule."""
    text = number(value)
    if value is None or value <= 0:
        return text
    exponent = math.log2(10 / value)
    if abs(exponent - round(exponent)) < 1e-6 and round(exponent) > 0:
        return f"{text} (10/2^{round(exponent)})"
    return text


def epochs(value: float | None) -> str:
    return DASH if value is None else f"{value:.3g}"


def integer(value: int | None) -> str:
    return DASH if value is None else str(value)


def duration(seconds: float | None) -> str:
    """``1h02m`` / ``3m05s`` / ``12.4s``."""
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def hours(value: float | None) -> str:
    return DASH if value is None else f"{value:.3g}"


def compare_row(summary: Summary) -> tuple[str, ...]:
    return (summary.name, integer(summary.effective_batch), integer(summary.per_gpu_batch),
            power_of_two(summary.base_lr), warmup(summary.warmup_epochs), number(summary.epsilon),
            epochs(summary.epochs), percent(summary.last_val_top1))


def report_row(summary: Summary) -> tuple[str, ...]:
    return (*compare_row(summary)[:6], summary.optimizer or DASH, integer(summary.gpus),
            epochs(summary.epochs), percent(summary.best_val_top1), percent(summary.last_val_top1),
            percent(summary.last_val_top5), duration(summary.wall_time_s), hours(summary.gpu_hours))


def render(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A centred Markdown pipe table, padded so it also reads in a terminal."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    widths = [max(width, 3) for width in widths]

    def line(cells) -> str:
        return "| " + " | ".join(cell.center(width) for cell, width in zip(cells, widths)) + " |"

    rule = "| " + " | ".join(":" + "-" * (width - 2) + ":" for width in widths) + " |"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def compare_table(summaries: list[Summary]) -> str:
    return render(COLUMNS, [compare_row(s) for s in sort_by_batch(summaries)])
