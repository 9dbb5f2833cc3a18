"""The sweep modules' units (larsctl/jobs/sweep_grid.py, sweeps.py, sweep_file.py), without
submitting anything: the grid's points and LRs, --lr-rule parsing, each point's shape from the
planner, evaluation cost following the batch, grid growth beyond an edge, the sweep file."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from larsctl.errors import UserError
from larsctl.facts.sweepdir import SweepPaths
from larsctl.jobs.sweep_file import SweepFile, read
from larsctl.jobs.sweep_grid import BatchGrid, SweepDefinition, SweepPoint, grown, parse_lr_rules
from larsctl.jobs.sweeps import concurrency, estimate, eval_every, one_shape, plan
from larsctl.planning.planner import lr_by_rule, max_per_gpu_batch
from larsctl.results.steps import BatchResult, Cell
from larsctl.schedulers.pbs import PbsScheduler
from larsctl.schedulers.slurm import SlurmScheduler

DEMO = str(Path(__file__).resolve().parents[2] / "jobs" / "demo.yaml")


def definition(**over) -> SweepDefinition:
    base = dict(cluster="local", recipe=DEMO, target="val/accuracy>=0.5", batches=[64, 256],
                optimizers=["lars", "sgd"], lrs=[1.0, 2.0], lr_rules=None, lr_factors=[1.0], seeds=1,
                eval_examples=512, max_steps=None)
    return SweepDefinition(**{**base, **over})


def test_the_grid_is_every_batch_optimizer_lr_and_seed():
    d = definition(seeds=2, gpus=2, max_concurrent=3)
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


@pytest.mark.parametrize("batch", [1, 3, 7, 64, 256, 1000, 1024])
def test_each_point_fills_the_gpus_it_can_with_a_per_gpu_batch_that_fits(batch, larsctl_dirs):
    (p,) = plan(definition(batches=[batch], optimizers=["sgd"], lrs=[0.1]))
    spec = p.spec
    gpus, per_gpu = spec.plan.gpus, spec.plan.per_gpu_batch
    max_gpus = spec.profile.nodes * spec.profile.gpus_per_node
    assert 1 <= gpus <= max_gpus and batch % gpus == 0
    assert per_gpu <= max_per_gpu_batch(spec.profile.gpu_type, "resnet18", "fp32")
    assert gpus * per_gpu * spec.plan.batches_per_allreduce == batch
    if batch % max_gpus == 0:
        assert gpus == max_gpus


def test_plan_gives_each_point_its_job(larsctl_dirs):
    d = definition()
    planned = plan(d)
    assert [p.point for p in planned] == d.points()
    for p in planned:
        point, spec = p.point, p.spec
        assert spec.plan.effective_batch == point.batch
        assert spec.trainer["base_lr"] == point.lr and spec.trainer["base_op"] == point.optimizer
        assert spec.trainer["seed"] == point.seed
        # At least the same resolution in examples at every batch; stop once the target is met.
        assert spec.trainer["eval_every_steps"] >= math.ceil(512 / point.batch)
        assert spec.trainer["stop_at_val_accuracy"] == 0.5
        assert spec.name == f"demo-{point.label}"


def test_plan_refuses_a_bad_target_before_anything(larsctl_dirs):
    with pytest.raises(UserError, match="--target"):
        plan(definition(target="val/accuracy>0.5"))


class FakeEstimate:
    def __init__(self, step_seconds, validation_seconds, validations=1):
        self.step_seconds, self.validation_seconds, self.validations = step_seconds, validation_seconds, validations


def test_evaluation_cost_follows_the_batch():
    d = definition(eval_examples=64, eval_share=0.25)
    # A validation as costly as 2 steps: at most one per 8 steps, whatever the examples say.
    assert eval_every(d, 4, FakeEstimate(1.0, 2.0)) == 16  # 64 examples / 4 = 16 steps: the examples win
    assert eval_every(d, 64, FakeEstimate(1.0, 2.0)) == 8  # 1 step by examples; cost caps it at 8
    # A big batch's step costs more than a validation: every 64 examples again.
    assert eval_every(d, 64, FakeEstimate(10.0, 2.0)) == 1


def grid(lrs, edge, ended=True, batch=64, optimizer="lars"):
    return BatchGrid(optimizer, batch, tuple(lrs), edge, ended)


def test_a_grid_grows_one_step_beyond_the_edge_its_best_lr_sits_at():
    d = definition(lrs=[1.0, 2.0, 4.0], seeds=2, lr_extend=2)
    assert grown(d, [grid([1.0, 2.0, 4.0], "high")]) == [SweepPoint(64, "lars", 8.0, 1), SweepPoint(64, "lars", 8.0, 2)]
    assert grown(d, [grid([1.0, 2.0, 4.0], "low")]) == [SweepPoint(64, "lars", 0.5, 1), SweepPoint(64, "lars", 0.5, 2)]
    assert grown(d, [grid([0.5, 1.0, 2.0, 4.0], "low")])[0].lr == 0.25  # one added below: one more
    assert grown(d, [grid([0.25, 0.5, 1.0, 2.0, 4.0], "low")]) == []  # the cap: lr_extend steps that side
    assert grown(d, [grid([1.0, 2.0, 4.0], None)]) == []  # best inside
    assert grown(d, [grid([1.0, 2.0, 4.0], "high", ended=False)]) == []  # not all ended: best not known
    assert grown(d, [grid([1.0, 2.0, 4.0], "only")]) == []  # a grid of one LR has no factor to grow by


def cell(lr, steps):
    return Cell("LARS", 64, lr, (1,), (steps,), steps)


@pytest.mark.parametrize("steps, edge", [((30, 20, 25), None), ((10, 20, 25), "low"), ((30, 20, 15), "high"),
                                         ((None, None, 15), "high"), ((None, None, None), None)])
def test_the_edge_a_batchs_best_lr_sits_at(steps, edge):
    cells = tuple(cell(lr, s) for lr, s in zip((1.0, 2.0, 4.0), steps))
    reached = [c for c in cells if c.median_steps is not None]
    best = min(reached, key=lambda c: c.median_steps) if reached else None
    assert BatchResult("LARS", 64, cells, best).edge == edge


def test_a_job_array_needs_one_shape_and_says_which_gpu_counts_fit(larsctl_dirs):
    planned = plan(definition(batches=[1, 64], optimizers=["sgd"], lrs=[0.1]))
    with pytest.raises(UserError, match="--gpus N, one of 1"):
        one_shape(planned)
    one_shape(plan(definition(batches=[2, 64], optimizers=["sgd"], lrs=[0.1], gpus=2)))


def test_concurrency_and_the_sweeps_estimate(larsctl_dirs):
    planned = plan(definition(batches=[64], optimizers=["sgd"], lrs=[0.1, 0.2, 0.4]))
    assert concurrency(definition(max_concurrent=2), planned) == 2
    one = planned[0].spec.plan.estimate
    gpu_hours, wall = estimate(planned, lanes=2)
    assert gpu_hours == pytest.approx(3 * one.gpu_hours)
    assert wall == pytest.approx(2 * one.total_seconds)  # 3 points in 2 lanes: two after one another


def test_the_sweep_file_reads_back_as_written(tmp_path):
    d = definition(lrs=[1.0, 2.0])
    sweep = SweepFile("sweep-demo-1", SweepPaths.of(tmp_path, "sweep-demo-1"), d).with_points(d.points()).save()
    sweep = sweep.with_job(d.points()[0].label, "demo-job-1").save()
    back = read(sweep.paths.sweep_json)
    assert back == sweep and back.job_ids() == ["demo-job-1"] and back.without_job() == d.points()[1:]
    assert sweep.paths.sweep_json == tmp_path / "sweeps" / "sweep-demo-1" / "sweep.json"


def test_a_sweep_file_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text("{}")
    with pytest.raises(UserError, match=f"{path}: not a larsctl sweep file"):
        read(path)


def test_array_task_ids():
    assert SlurmScheduler.task_id("123", 4) == "123_4"
    assert PbsScheduler.task_id("77[].server", 3) == "77[3].server"
    assert PbsScheduler.task_id("77[]", 0) == "77[0]"
