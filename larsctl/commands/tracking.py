"""``--track`` (submit, sweep): the experiment tracker of a job, over its recipe's ``tracking:``."""
from __future__ import annotations

from dataclasses import replace

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


track_option = click.option("--track", "track", metavar="mlflow:URI|wandb[:offline|:online]|off",
                            callback=parse_track, help=TRACK_HELP)


def with_tracking(spec, track: dict | None):
    """``spec`` with ``--track`` applied (None: as the recipe says; {}: off).  Whether the tracker's
    library is installed is the spec's own check (JobSpec.check_runnable), before anything is written."""
    if track is None:
        return spec
    from larsctl.config.env import expand_path
    from trainer.tracking import TrackingError, TrackingSettings, merge

    if not track:
        return replace(spec, tracking=None)
    base = spec.tracking.to_dict() if spec.tracking is not None else None
    try:
        settings = TrackingSettings.from_dict(merge(base, track), "--track").absolute(expand=expand_path)
    except TrackingError as exc:
        raise UserError(str(exc)) from None
    return replace(spec, tracking=settings)
