"""Recipes: schema errors as one exact line, the shipped recipes, and the resolved job spec."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from larsctl.config.recipes import RecipeError, load_recipe
from larsctl.planning.spec import resolve_job

REPO = Path(__file__).resolve().parents[2]
BASE = ["name: r", "model: resnet50", "target_batch: 1024", "trainer:", "  wd: 0.0001"]

# case -> (lines replaced by index, lines appended, expected message after "<file>:")
RECIPE_ERRORS = {
    "unknown_key": ({}, ["lr: 3"],
                    "6: lr: unknown key; expected one of: name, description, model, target_batch, "
                    "per_gpu_batch, epochs, precision, lr_rule, base_lr, warmup_epochs, epsilon, "
                    "train_images, trainer, tracking (got 3)"),
    "planner_owned": ({}, ["  batch_size: 128"],
                      "6: trainer.batch_size: decided by the planner; set per_gpu_batch at the "
                      "top level (got 128)"),
    "lr_scaling": ({}, ["  lr_scaling: linear"],
                   "6: trainer.lr_scaling: decided by the planner (jobs pass the final LR "
                   "with lr_scaling keep); set base_lr at the top level (got 'linear')"),
    "model": ({1: "model: vgg16"}, [],
              "2: model: expected 'smallcnn', 'resnet18', 'resnet50' or 'resnet101' (got 'vgg16')"),
    "missing_target": ({2: "# none"}, [], "1: target_batch: missing required field"),
    "base_op": ({}, ["  base_op: adam"],
                "6: trainer.base_op: expected one of lars, lamb, sgd (got 'adam')"),
    "dataset": ({}, ["  dataset: cifar10"], "6: trainer.dataset: expected digits (got 'cifar10')"),
    "negative_lr": ({}, ["base_lr: -1"], "6: base_lr: expected > 0 (got -1)"),
    "per_gpu_batch": ({}, ["per_gpu_batch: 0"], "6: per_gpu_batch: expected >= 1 (got 0)"),
    "boolean": ({}, ["  bn_bias_separately: maybe"],
                "6: trainer.bn_bias_separately: expected true or false (got 'maybe')"),
    "precision": ({}, ["precision: fp8"],
                  "6: precision: expected 'fp32', 'fp16' or 'bf16' (got 'fp8')"),
}


@pytest.mark.parametrize("case", sorted(RECIPE_ERRORS))
def test_recipe_schema_error_is_one_exact_line(variant, case):
    replaced, appended, expected = RECIPE_ERRORS[case]
    path = variant(case, BASE, replaced, appended)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.message == f"{path}:{expected}"
    assert info.value.exit_code == 2


def test_unknown_trainer_option_lists_the_valid_ones(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(BASE + ["  lr: 3"]) + "\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.message.startswith(f"{path}:6: trainer.lr: unknown key; expected one of: ")
    assert ", checkpoint_every_steps, " in info.value.message
    assert info.value.message.endswith(" (got 3)")


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "nope.yaml")
    assert info.value.message == f"{tmp_path / 'nope.yaml'}: no such recipe file"


def test_shipped_recipes_are_valid():
    names = sorted(p.stem for p in (REPO / "jobs").glob("*.yaml"))
    assert names == ["demo", "digits-sweep", "resnet50-lars-16k", "resnet50-lars-1k", "resnet50-lars-32k",
                     "resnet50-lars-4k", "resnet50-lars-512", "resnet50-lars-8k"]
    for name in names:
        recipe, _ = load_recipe(REPO / "jobs" / f"{name}.yaml")
        assert recipe.name == name


def test_imagenet_paths_expand_from_the_environment(monkeypatch):
    monkeypatch.setenv("IMAGENET_DIR", "/data/ILSVRC2012")
    spec = resolve_job("slurm-v100", REPO / "jobs/resnet50-lars-8k.yaml")
    assert (spec.trainer["train_dir"], spec.trainer["val_dir"]) == \
        ("/data/ILSVRC2012/train", "/data/ILSVRC2012/val")
    assert spec.trainer["data"] == "imagefolder"
    assert spec.unset_variables == []
    monkeypatch.delenv("IMAGENET_DIR")
    spec = resolve_job("slurm-v100", REPO / "jobs/resnet50-lars-8k.yaml")
    assert spec.trainer["train_dir"] == "${IMAGENET_DIR}/train"
    assert spec.unset_variables == ["IMAGENET_DIR"]


def test_demo_job_spec_on_the_local_profile():
    spec = resolve_job("local", REPO / "jobs/demo.yaml")
    plan = spec.plan
    assert (plan.gpus, plan.nodes, plan.per_gpu_batch, plan.batches_per_allreduce) == (2, 1, 64, 2)
    assert plan.effective_batch == 256
    trainer = spec.trainer
    assert {k: trainer[k] for k in ("dataset", "data", "image_size", "model", "batch_size",
                                    "batches_per_allreduce", "lr_scaling", "engine", "amp",
                                    "no_cuda")} == \
        {"dataset": "digits", "data": "imagefolder", "image_size": 32, "model": "resnet18",
         "batch_size": 64, "batches_per_allreduce": 2, "lr_scaling": "keep",
         "engine": "horovod", "amp": "off", "no_cuda": True}
    recipe, _ = load_recipe(REPO / "jobs/demo.yaml")
    assert trainer["base_lr"] == recipe.base_lr and trainer["epochs"] == recipe.epochs
    assert plan.rules["base_lr"].startswith("recipe override (legw gives 2.828")


def test_job_spec_layout_round_trips_through_yaml():
    spec = resolve_job("slurm-v100", REPO / "jobs/resnet50-lars-32k.yaml", name="run32k")
    data = yaml.safe_load(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    assert list(data) == ["job", "plan", "cluster", "trainer", "faults"]
    assert data["faults"]["bound_s"] == 180 and data["faults"]["policy"]["hang"] == "resume"
    assert data["job"] == {"name": "run32k", "cluster": "slurm-v100",
                           "recipe": str(REPO / "jobs/resnet50-lars-32k.yaml")}
    for key in ("nodes", "gpus", "gpus_per_node", "per_gpu_batch", "batches_per_allreduce",
                "effective_batch", "base_lr", "warmup_epochs", "epsilon", "lr_rule", "rules"):
        assert key in data["plan"]
    assert {"epoch_seconds", "total_seconds", "gpu_hours", "assumptions"} <= \
        set(data["plan"]["estimate"])
    assert data["cluster"]["name"] == "slurm-v100" and data["cluster"]["gpus_per_node"] == 4
    assert data["trainer"]["engine"] == "horovod" and data["trainer"]["lr_scaling"] == "keep"


def test_flags_override_the_recipe():
    spec = resolve_job("slurm-v100", REPO / "jobs/resnet50-lars-8k.yaml", target_batch=16384,
                       epochs=30, precision="fp16", per_gpu_batch=256)
    plan = spec.plan
    assert (plan.effective_batch, plan.epochs, plan.precision, plan.per_gpu_batch) == \
        (16384, 30, "fp16", 256)
    assert spec.trainer["amp"] == "fp16" and spec.trainer["fp16_allreduce"] is True
    with pytest.raises(TypeError, match="unknown flags: momentum"):
        resolve_job("local", target_batch=256, momentum=0.9)


def test_a_job_records_its_recipe_as_an_absolute_path(larsctl_dirs, monkeypatch):
    """job.yaml is read later from anywhere (noise, report, resume): a relative path would point elsewhere."""
    monkeypatch.chdir(REPO)
    spec = resolve_job("local", "jobs/demo.yaml")
    assert spec.to_dict()["job"]["recipe"] == str(Path.cwd() / "jobs" / "demo.yaml")
