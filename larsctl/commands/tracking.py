"""``--track`` (submit, sweep): the experiment tracker of a job, over its recipe's ``tracking:``."""
from __future__ import annotations

import click

from larsctl.errors import UserError

TRACK_HELP = ("Experiment tracker for the job's one run across every segment: mlflow:URI (a tracking "
              "server, or a local directory), wandb (offline, synced later with `wandb sync`), "
              "wandb:online, or off; over the recipe's tracking: section.")


def parse_track(ctx, param, value: str | None) -> dict | None:
    """The option's callback: the flag as a ``tracking:`` mapping ({} for off, None when not given)."""
    if value is None:
        return None
    from trainer.tracking import TrackingError, parse_track as parse

    try:
        return parse(value) or {}
    except TrackingError as exc:
        raise UserError(str(exc)) from None


SWEEP_TRACK_HELP = ("Experiment tracker for every point's job, one run each: mlflow:URI (the runs in one "
                    "experiment named after the sweep), wandb (offline; the runs in one group named after the "
                    "sweep), wandb:online, or off; over the recipe's tracking: section.")


def _option(help_text: str):
    return click.option("--track", "track", metavar="mlflow:URI|wandb[:offline|:online]|off",
                        callback=parse_track, help=help_text)


track_option = _option(TRACK_HELP)
sweep_track_option = _option(SWEEP_TRACK_HELP)


def with_tracking(spec, track: dict | None):
    """``spec`` with ``--track`` applied (None: as the recipe says; {}: off), before anything is written."""
    from larsctl.jobs.tracking import apply_track

    return apply_track(spec, track)
