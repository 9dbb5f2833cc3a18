"""The sweep module's units (larsctl/jobs/sweeps.py), without submitting anything: the grid's
points and LRs, --lr-rule parsing, each point's layout, and plan_sweep's specs and refusals."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from larsctl.config.profiles import load_profile
from larsctl.errors import UserError
from larsctl.jobs.sweeps import SweepDefinition, SweepPoint, _layout, parse_lr_rules, plan_sweep
from larsctl.planning.planner import lr_by_rule, max_per_gpu_batch

DEMO = str(Path(__file__).resolve().parents[2] / "jobs" / "demo.yaml")


def definition(**over) -> SweepDefinition:
    base = dict(cluster="local", recipe=DEMO, target="val/accuracy>=0.5", batches=[64, 256],
                optimizers=["lars", "sgd"], lrs=[1.0, 2.0], lr_rules=None, lr_factors=[1.0], seeds=1,
                eval_examples=512, max_steps=None)
    return SweepDefinition(**{**base, **over})


def test_the_grid_is_every_batch_optimizer_lr_and_seed():
    d = definition(seeds=2)
    points = d.points()
    assert len(points) == 2 * 2 * 2 * 2 and len(set(points)) == len(points)
    assert points[0] == SweepPoint(64, "lars", 1.0, 1) and points[-1] == SweepPoint(256, "sgd", 2.0, 2)
    assert points[0].label == "b64-lars-lr1-s1"
    assert SweepDefinition.from_dict(d.to_dict()) == d  # what the registry stores reads back


def test_lrs_by_rule_scale_each_batch_by_the_factors():
    d = definition(lrs=None, lr_rules={"lars": "legw", "sgd": "linear"}, lr_factors=[0.5, 1.0, 2.0])
    for batch in (64, 256):
        for opt, rule in (("lars", "legw"), ("sgd", "linear")):
            base = lr_by_rule(rule, batch)[0]
            assert d.lrs_for(batch, opt) == [base * 0.5, base, base * 2.0]
    assert d.lrs_for(64, "lars") != d.lrs_for(256, "lars")


@pytest.mark.parametrize("text, expected", [
    ("legw", {"lars": "legw", "sgd": "legw"}),
    ("lars=legw,sgd=linear", {"lars": "legw", "sgd": "linear"}),
    (" lars = sqrt , sgd=linear", {"lars": "sqrt", "sgd": "linear"}),
    (None, None),
])
def test_lr_rules(text, expected):
    assert parse_lr_rules(text, ["lars", "sgd"]) == expected


@pytest.mark.parametrize("text, says", [
    ("lars=legw", "no rule for sgd"),
    ("lars=legw,sgd", "expected RULE or OPTIMIZER=RULE"),
    ("cubic", "'cubic' is not one of"),
])
def test_a_bad_lr_rule_names_the_text(text, says):
    with pytest.raises(UserError, match=says) as e:
        parse_lr_rules(text, ["lars", "sgd"])
    assert text in e.value.message


@pytest.mark.parametrize("batch", [1, 3, 7, 64, 256, 1000, 4096])
def test_each_point_fills_the_gpus_it_can_with_a_per_gpu_batch_that_fits(batch):
    profile = load_profile("local")
    gpus, per_gpu = _layout(profile, "resnet18", "fp32", batch)
    assert 1 <= gpus <= profile.max_gpus and batch % gpus == 0
    assert per_gpu <= max_per_gpu_batch(profile.gpu_type, "resnet18", "fp32") and (batch // gpus) % per_gpu == 0
    if batch % profile.max_gpus == 0:
        assert gpus == profile.max_gpus


def test_plan_sweep_gives_each_point_its_job(larsctl_dirs):
    d = definition()
    planned = plan_sweep(d, "sweep-1")
    assert [p for p, _ in planned] == d.points()
    for point, spec in planned:
        assert spec.plan.effective_batch == point.batch
        assert spec.trainer["base_lr"] == point.lr and spec.trainer["base_op"] == point.optimizer
        assert spec.trainer["seed"] == point.seed
        # The same resolution in examples at every batch; stop once the target is met.
        assert spec.trainer["eval_every_steps"] == math.ceil(512 / point.batch)
        assert spec.trainer["stop_at_val_accuracy"] == 0.5
        assert spec.name == f"demo-{point.label}"


def test_plan_sweep_refuses_a_bad_target_before_anything(larsctl_dirs):
    with pytest.raises(UserError, match="--target"):
        plan_sweep(definition(target="val/accuracy>0.5"), "sweep-1")
