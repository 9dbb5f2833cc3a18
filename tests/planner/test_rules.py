"""LR/warmup/epsilon rules and the six published rows of the reference LARS table."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from larsctl.format import power_form, warmup_form
from larsctl.planning.planner import Cluster, PlanRequest, lr_by_rule, make_plan
from larsctl.config.profiles import load_profile
from larsctl.planning.spec import resolve_job

REPO = Path(__file__).resolve().parents[2]

# effective batch -> (recipe file, per-GPU batch, base LR, warmup epochs, epsilon), as published
PUBLISHED = {
    512: ("resnet50-lars-512", 64, 2 ** 2, 10 / 2 ** 6, 1e-5),
    1024: ("resnet50-lars-1k", 128, 2 ** 2.5, 10 / 2 ** 5, 1e-5),
    4096: ("resnet50-lars-4k", 128, 2 ** 3.5, 10 / 2 ** 3, 1e-5),
    8192: ("resnet50-lars-8k", 128, 2 ** 4, 10 / 2 ** 2, 1e-5),
    16384: ("resnet50-lars-16k", 128, 2 ** 4.5, 5.0, 1e-5),
    32768: ("resnet50-lars-32k", 64, 2 ** 5, 14.0, 0.0),
}


@pytest.mark.parametrize("batch", sorted(PUBLISHED))
@pytest.mark.parametrize("cluster", ["slurm-v100", "slurm-p100", "pbs-v100"])
def test_recipe_reproduces_the_published_row(batch, cluster):
    recipe, per_gpu, lr, warmup, epsilon = PUBLISHED[batch]
    spec = resolve_job(cluster, REPO / "jobs" / f"{recipe}.yaml")
    plan = spec.plan
    assert plan.effective_batch == batch
    assert plan.gpus * plan.per_gpu_batch * plan.batches_per_allreduce == batch
    assert plan.per_gpu_batch == per_gpu
    assert math.isclose(plan.base_lr, lr, rel_tol=1e-12)
    assert plan.warmup_epochs == warmup
    assert plan.epsilon == epsilon
    trainer = spec.trainer
    assert trainer["lr_scaling"] == "keep"
    assert (trainer["base_lr"], trainer["warmup_epochs"], trainer["epsilon"]) == \
        (plan.base_lr, plan.warmup_epochs, plan.epsilon)
    assert (trainer["batch_size"], trainer["epochs"], trainer["model"]) == (per_gpu, 90, "resnet50")
    assert (trainer["wd"], trainer["momentum"], trainer["label_smoothing"]) == (0.0001, 0.9, 0.1)
    assert (trainer["base_op"], trainer["bn_bias_separately"], trainer["lr_power"]) == \
        ("lars", True, 2.0)


@pytest.mark.parametrize("batch", [512, 1024, 4096, 8192, 16384])
def test_legw_rule_alone_gives_the_first_five_rows(batch):
    _, _, lr, warmup, epsilon = PUBLISHED[batch]
    got_lr, got_warmup, got_eps, _ = lr_by_rule("legw", batch)
    assert math.isclose(got_lr, lr, rel_tol=1e-12)
    assert (got_warmup, got_eps) == (warmup, epsilon)


def test_32k_row_deviates_and_the_recipe_says_so():
    # The rule gives LR 2^5 (as published) but warmup 10 and epsilon 1e-5.
    lr, warmup, eps, _ = lr_by_rule("legw", 32768)
    assert (lr, warmup, eps) == (32.0, 10.0, 1e-5)
    rules = resolve_job("slurm-v100", REPO / "jobs/resnet50-lars-32k.yaml").plan.rules
    assert rules["base_lr"] == "legw: 2^2*sqrt(32768/512) = 2^5"
    assert rules["warmup_epochs"] == "recipe override (legw gives 10)"
    assert rules["epsilon"] == "recipe override (legw gives 1e-05)"
    plain = resolve_job("slurm-v100", target_batch=32768).plan
    assert (plain.base_lr, plain.warmup_epochs, plain.epsilon) == (32.0, 10.0, 1e-5)


def test_rule_texts_name_the_rule_and_the_arithmetic():
    rules = resolve_job("slurm-v100", target_batch=1024).plan.rules
    assert rules["base_lr"] == "legw: 2^2*sqrt(1024/512) = 2^2.5"
    assert rules["warmup_epochs"] == "legw: (10/64)*1024/512 = 10/2^5"
    assert rules["epsilon"] == "legw: 1e-05"
    assert rules["per_gpu_batch"] == ("table: largest power of two that fits V100-16GB "
                                      "for resnet50 fp32")
    assert rules["batches_per_allreduce"] == "1024 / (8 x 128) = 1"


# rule, batch -> (lr, warmup, epsilon)
RULES = {
    ("legw", 2048): (8.0, 0.625, 1e-5),
    ("legw", 65536): (4 * math.sqrt(128), 20.0, 1e-5),
    ("sqrt", 512): (4.0, 5.0, 1e-5),
    ("sqrt", 2048): (8.0, 5.0, 1e-5),
    ("sqrt", 32768): (32.0, 5.0, 1e-5),
    ("linear", 256): (0.1, 5.0, 1e-5),
    ("linear", 8192): (3.2, 5.0, 1e-5),
    ("linear", 32768): (12.8, 5.0, 1e-5),
}


@pytest.mark.parametrize("rule,batch", sorted(RULES))
def test_every_rule(rule, batch):
    lr, warmup, eps = RULES[(rule, batch)]
    got = lr_by_rule(rule, batch)
    assert math.isclose(got[0], lr, rel_tol=1e-12)
    assert got[1:3] == (warmup, eps)
    plan = make_plan(Cluster.of(load_profile("slurm-v100")),
                     PlanRequest(batch, lr_rule=rule, per_gpu_batch=64))
    assert plan.lr_rule == rule and plan.rules["base_lr"].startswith(f"{rule}: ")
    assert math.isclose(plan.base_lr, lr, rel_tol=1e-12)


def test_lr_rule_flag_switches_rules_and_recipe_overrides_still_win():
    spec = resolve_job("slurm-v100", REPO / "jobs/resnet50-lars-32k.yaml", lr_rule="linear")
    assert math.isclose(spec.plan.base_lr, 12.8)
    assert spec.plan.warmup_epochs == 14.0  # recipe override beats any rule
    assert spec.plan.rules["warmup_epochs"] == "recipe override (linear gives 5)"


def test_pretty_forms():
    assert [power_form(v) for v in (4.0, 2 ** 2.5, 32.0, 3.2, 1.0)] == ["2^2", "2^2.5", "2^5", None, None]
    assert [warmup_form(v) for v in (10 / 64, 0.3125, 5.0, 14.0, 0.3)] == \
        ["10/2^6", "10/2^5", None, None, None]
