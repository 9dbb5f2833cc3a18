"""The two ways a larsctl command fails, with their exit codes.

Bad input (a wrong flag value, an invalid profile, an unknown job id) is the
user's to fix: one line on stderr, exit 2, no traceback.  A failure of the
world (sbatch failed, the disk is full) exits 1.  Both are ClickExceptions, so
Click prints them as ``Error: <message>`` on stderr.
"""
from __future__ import annotations

import click

BAD_INPUT = 2
FAILURE = 1


class UserError(click.ClickException):
    """Bad input: names the file, field or value and what was expected."""

    exit_code = BAD_INPUT


class Failure(click.ClickException):
    """Something outside the user's input failed (a scheduler, the disk)."""

    exit_code = FAILURE


def one_line(text: object) -> str:
    """A multi-line message (a tool's stderr) joined into one line with "; "."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def warn(message: str) -> None:
    """A warning line on stderr (the command goes on)."""
    click.echo(f"Warning: {message}", err=True)
