"""What a run costs: the steps the trainer really takes, start-up and validation.

The trainer drops the tail of each rank's share that is not a full micro-batch and
rounds down to whole optimizer steps (trainer/data/sampling.py rank_share,
trainer/data/steps.py check_steps); ``max_steps`` ends the run early.  It validates
at every epoch end, every ``eval_every_steps`` inside an epoch and once more when
``max_steps`` ends mid-epoch (trainer/run.py ``_loop``).
"""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.planning.estimate import VALIDATION_SPEEDUP, steps_per_epoch, validations
from larsctl.facts.hardware import GPUS
from larsctl.planning.planner import Cluster, PlanRequest, make_plan
from tests.planner.conftest import REPO

DAY = 86400
LOCAL = Cluster("local", 1, 2, "cpu", 10.0, DAY, 60)
V100 = Cluster("v100", 64, 4, "V100-16GB", 100.0, 2 * DAY, 300)
DEMO = {"model": "resnet18", "image_size": 32, "train_images": 1437, "val_images": 360,
        "per_gpu_batch": 64, "epochs": 8}

# (train images, ranks, per-GPU batch, batches per allreduce) -> optimizer steps per epoch
STEPS_PER_EPOCH = {
    (1437, 2, 64, 2): 5,             # the demo: 718 per rank, 11 micro-batches, 5 steps (40 in 8 epochs)
    (1437, 1, 64, 1): 22,
    (1_281_167, 256, 32, 1): 156,    # Goyal et al.'s 8K: 5004 per rank, 156 full batches
    (1_281_167, 1536, 39, 1): 21,    # MLPerf v0.6's 59,904: 834 per rank
    (1_281_167, 8, 128, 4): 312,
    (100, 4, 64, 1): 1,              # fewer than one step: the trainer refuses; never 0 here
}


@pytest.mark.parametrize("key", sorted(STEPS_PER_EPOCH))
def test_steps_per_epoch_as_the_trainer_counts_them(key):
    images, ranks, per_gpu, k = key
    assert steps_per_epoch(images, ranks, per_gpu, k) == STEPS_PER_EPOCH[key]


# (steps per epoch, steps run, eval_every_steps) -> validations
VALIDATIONS = {
    (5, 40, None): 8,       # one per epoch end
    (5, 20, None): 4,       # max_steps on an epoch end: no extra one
    (5, 12, None): 3,       # 2 epoch ends + the one when max_steps stops mid-epoch
    (5, 3, None): 1,
    (5, 40, 2): 8 + 16,     # even steps that are not epoch ends (10, 20, 30, 40 are)
    (5, 40, 5): 8,          # every eval coincides with an epoch end
    (5, 12, 4): 5,          # 4 and 8 inside epochs, ends 5 and 10, the final one at 12
    (5, 12, 12): 3,
    (156, 14040, 1000): 90 + 14,
}


@pytest.mark.parametrize("key", sorted(VALIDATIONS, key=str))
def test_validations_as_the_trainer_runs_them(key):
    assert validations(*key) == VALIDATIONS[key]


# max_steps -> (steps, validations) of the demo on the local profile
MAX_STEPS = {None: (40, 8), 20: (20, 4), 12: (12, 3), 1: (1, 1), 1000: (40, 8)}


@pytest.mark.parametrize("max_steps", sorted(MAX_STEPS, key=str))
def test_max_steps_estimates_those_steps(max_steps):
    est = make_plan(LOCAL, PlanRequest(256, max_steps=max_steps, **DEMO)).estimate
    assert (est.steps, est.validations) == MAX_STEPS[max_steps]
    assert est.train_seconds == pytest.approx(est.steps * est.step_seconds)


def test_total_is_start_up_plus_steps_plus_validations():
    est = make_plan(LOCAL, PlanRequest(256, **DEMO)).estimate
    per_worker = 2 * 64 / est.compute_seconds  # k x per-GPU batch per compute time
    assert est.startup_seconds == GPUS["cpu"].startup_seconds
    assert est.validation_seconds == pytest.approx(8 * 360 / (2 * per_worker * VALIDATION_SPEEDUP))
    assert est.total_seconds == pytest.approx(est.startup_seconds + est.train_seconds
                                              + est.validation_seconds)
    assert est.epoch_seconds == pytest.approx(5 * est.step_seconds + est.validation_seconds / 8)
    text = "\n".join(est.assumptions)
    assert f"start-up {GPUS['cpu'].startup_seconds:g} s per job" in text
    assert "8 validations of 360 images" in text


def test_imagenet_validation_set_by_default_scaled_for_other_sets():
    imagenet = make_plan(V100, PlanRequest(8192, epochs=1)).estimate
    assert imagenet.validations == 1
    assert "1 validations of 50,000 images" in "\n".join(imagenet.assumptions)
    small = make_plan(V100, PlanRequest(8192, epochs=1, train_images=128_117)).estimate
    assert "1 validations of 5,000 images" in "\n".join(small.assumptions)


def test_eval_every_steps_adds_validations():
    plain = make_plan(LOCAL, PlanRequest(256, **DEMO)).estimate
    often = make_plan(LOCAL, PlanRequest(256, eval_every_steps=2, **DEMO)).estimate
    assert often.validations == 24
    assert often.validation_seconds == pytest.approx(3 * plain.validation_seconds)


def _plan_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["plan", "--cluster", "local", "--recipe",
                                      str(REPO / "jobs/demo.yaml"), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["plan"]["estimate"]


def test_plan_max_steps_flag_reaches_the_estimate():
    full, short = _plan_json(), _plan_json("--max-steps", "10")
    assert (full["steps"], short["steps"]) == (40, 10)
    assert (full["validations"], short["validations"]) == (8, 2)
    assert short["train_seconds"] == pytest.approx(full["train_seconds"] / 4, rel=1e-3)
    assert short["total_seconds"] < full["total_seconds"]


def test_digits_validation_split_reaches_the_estimate():
    assert "8 validations of 360 images" in "\n".join(_plan_json()["assumptions"])
    evals = _plan_json("--set", "eval_every_steps=2")
    assert evals["validations"] == 24


def test_plan_table_shows_the_figure_and_the_parts_of_the_run():
    result = CliRunner().invoke(cli, ["plan", "--cluster", "local", "--recipe",
                                      str(REPO / "jobs/demo.yaml"), "--max-steps", "12"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\n  throughput table: 443 img/s per worker (cpu, resnet18, fp32, 32 px; " in out
    assert "  epoch 1.6s (5 steps and a validation)\n" in out
    assert re.search(r"\n  run \S+ = start-up 15\.0s \+ 12 steps \S+ \+ 3 validations \S+ "
                     r"\(max_steps 12\), ", out), out
