"""Evaluations between epoch ends (--eval-every-steps) and stopping once a target accuracy
is reached (--stop-at-val-accuracy): what a batch-size sweep measures steps-to-target with."""
from __future__ import annotations

from tests.trainer.helpers import TINY, events, records, run

ARGS = TINY + ["--data", "synthetic", "--num-classes", "4", "--synthetic-length", "160", "--batch-size", "8",
               "--epochs", "2", "--warmup-epochs", "0", "--base-lr", "0.1", "--engine", "ddp"]


def test_validation_every_n_steps_as_well_as_at_epoch_ends(tmp_path):
    out = tmp_path / "run"
    assert run("python", 1, ARGS + ["--eval-every-steps", "6", "--max-steps", "25", "--out-dir", str(out)],
               tmp_path / "log") == 0
    val_steps = [r["step"] for r in records(out) if r["kind"] == "val"]
    assert val_steps == [6, 12, 18, 20, 24, 25]  # every 6 steps, the epoch end (20 steps) and the last step


def test_a_reached_target_ends_the_run_at_that_evaluation(tmp_path):
    out = tmp_path / "run"
    # Any accuracy reaches 0.01: the first evaluation (step 4) ends the run, done, exit 0.
    assert run("python", 1, ARGS + ["--eval-every-steps", "4", "--stop-at-val-accuracy", "0.01",
                                    "--out-dir", str(out)], tmp_path / "log") == 0
    assert [r["step"] for r in records(out) if r["kind"] == "val"] == [4]
    assert events(out, "done")[-1]["step"] == 4
    assert events(out, "checkpoint")[-1]["step"] == 4
