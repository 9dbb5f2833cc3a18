"""A sweep's target and the trainer's stop are the same comparison: a run the trainer stopped
at its target is counted as reaching it at that very step (the real trainer, twice: once to
find an accuracy some evaluation meets exactly, once stopping there)."""
from __future__ import annotations

import pytest

from larsctl.results.steps import parse_target, steps_to_target
from tests.trainer.helpers import TINY, events, records, run

# Deterministic, so the second run repeats the first up to its stop.
ARGS = TINY + ["--data", "synthetic", "--num-classes", "4", "--synthetic-length", "160", "--batch-size", "8",
               "--epochs", "2", "--warmup-epochs", "0", "--base-lr", "0.1", "--engine", "ddp", "--deterministic",
               "--eval-every-steps", "2"]


def flags(options: dict) -> list[str]:
    return [w for key, value in options.items() for w in (f"--{key.replace('_', '-')}", repr(value))]


@pytest.mark.slow
def test_a_run_the_trainer_stopped_at_its_target_reached_it_there(tmp_path):
    free = tmp_path / "free"
    assert run("python", 1, ARGS + ["--out-dir", str(free)], tmp_path / "free.log") == 0
    best, first = -1.0, None
    for r in records(free):
        if r["kind"] == "val" and r["accuracy"] > best:
            best, first = r["accuracy"], r["step"]  # the last new best: met exactly, and first, there
    target = parse_target(f"val/accuracy>={best!r}")
    assert steps_to_target(records(free), target) == first
    stopped = tmp_path / "stopped"
    assert run("python", 1, ARGS + [*flags(target.trainer_options()), "--out-dir", str(stopped)],
               tmp_path / "stopped.log") == 0
    assert events(stopped, "done")[-1]["step"] == first  # the trainer stopped there
    assert steps_to_target(records(stopped), target) == first  # and the sweep counts it as reached there


@pytest.mark.parametrize("text", ["val/accuracy>0.5", "val/accuracy<0.5", "val/loss<1", "val/top5>0.8"])
def test_strict_operators_are_not_targets(text):
    """The trainer stops at >=; a strict target would count its stopped runs as misses."""
    with pytest.raises(ValueError, match="is not a target operator"):
        parse_target(text)


@pytest.mark.parametrize("text, options", [
    ("val/accuracy>=0.8", {"stop_at_val_accuracy": 0.8}),  # the trainer stops there
    ("val/top5>=0.8", {}),                                  # it cannot: the run goes to its last step
    ("val/loss<=0.5", {}),
    ("train/loss<=0.5", {}),
])
def test_which_targets_the_trainer_stops_at(text, options):
    assert parse_target(text).trainer_options() == options
