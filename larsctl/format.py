"""How larsctl writes numbers and tables, in one place.

Durations ("1h02m", "3m05s", "12.4s"), the reference README's forms of LRs (2^2.5)
and warmups (10/2^5), and one table renderer for every listing: aligned plain
columns for the terminal (status, jobs, clusters list) or a Markdown pipe table
whose columns also line up in a terminal (compare, report).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import click

DASH = "-"


def number(value: float | None, digits: int = 4) -> str:
    """Up to ``digits`` significant digits, no trailing zeros (5.657, 0.1562, 1e-05)."""
    if value is None:
        return DASH
    if value == 0:
        return "0.0"
    return f"{value:.{digits}g}"


def power_form(value: float | None) -> str | None:
    """``2^2.5`` when ``value`` is 2 to a non-zero multiple of 1/2 (how the reference writes LRs)."""
    if value is None or value <= 0:
        return None
    twice = 2 * math.log2(value)
    if abs(twice - round(twice)) < 1e-6 and round(twice) != 0:
        return f"2^{round(twice) / 2:g}"
    return None


def warmup_form(value: float | None) -> str | None:
    """``10/2^5`` when a fractional ``value`` is 10 over a power of two (the reference's warmups)."""
    if value is None or value <= 0 or value == int(value):
        return None
    exponent = math.log2(10 / value)
    if abs(exponent - round(exponent)) < 1e-6 and round(exponent) > 0:
        return f"10/2^{round(exponent)}"
    return None


def with_form(value: float | None, form: Callable[[float | None], str | None], digits: int = 4) -> str:
    """``5.657 (2^2.5)``; just the number when the form adds nothing."""
    text, shown = number(value, digits), form(value)
    return f"{text} ({shown})" if shown and shown != text else text


def percent(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.2f}%"


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


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False,
                 colours: dict[int, Callable[[str], str | None]] | None = None) -> str:
    """Every listing's table.

    Plain: left-aligned columns two spaces apart.  Markdown: a centred pipe table.
    ``colours`` maps a column to a function giving a cell's colour (click.style
    colours; click.echo drops them when the output is not a terminal).
    """
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    if markdown:
        widths = [max(width, 3) for width in widths]

        def line(cells) -> str:
            return "| " + " | ".join(str(c).center(w) for c, w in zip(cells, widths)) + " |"

        rule = "| " + " | ".join(":" + "-" * (w - 2) + ":" for w in widths) + " |"
        return "\n".join([line(header), rule, *(line(row) for row in rows)])
    colours = colours or {}
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    for row in rows:
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths)):
            text = str(cell).ljust(width)
            colour = colours[i](str(cell)) if i in colours else None
            cells.append(click.style(text, fg=colour) if colour else text)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
