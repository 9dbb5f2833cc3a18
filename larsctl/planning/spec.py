"""Resolve cluster + recipe + planner flags into one job spec (what job.yaml holds).

``resolve_job(profile, recipe=None, **overrides)``: ``overrides`` are the ``larsctl
plan`` flags (target_batch, gpus, per_gpu_batch, model, epochs, precision, lr_rule,
name); a flag given (not None) wins over the recipe.  ``JobSpec.to_dict()``::

    job:     {name, cluster, recipe}
    plan:    {nodes, gpus, gpus_per_node, per_gpu_batch, ..., rules, estimate}
    cluster: {the profile}
    trainer: {flat trainer options, final LR with lr_scaling: keep}
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larsctl.planning.planner import Cluster, Plan, PlanError, PlanRequest, make_plan, max_per_gpu_batch
from larsctl.config.profiles import ClusterProfile, expand_path, load_profile
from larsctl.config.recipes import PATH_OPTIONS, Recipe, load_recipe

PLAN_FLAGS = ("target_batch", "gpus", "per_gpu_batch", "model", "epochs", "precision",
              "lr_rule", "name")
AMP = {"fp32": "off", "fp16": "fp16", "bf16": "bf16"}
# The published LARS ResNet-50 settings (reference README), used when a recipe is silent.
TRAINER_DEFAULTS = {"wd": 0.0001, "momentum": 0.9, "label_smoothing": 0.1, "base_op": "lars",
                    "bn_bias_separately": True, "lr_power": 2.0}
_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def variables_in(text: str) -> set[str]:
    """The $NAME / ${NAME} references left in a path after expansion."""
    return {m.group(1) or m.group(2) for m in _VAR.finditer(text)}


@dataclass(frozen=True)
class JobSpec:
    name: str
    profile: ClusterProfile
    recipe: Path | None
    plan: Plan
    trainer: dict

    @property
    def unset_variables(self) -> list[str]:
        """$VARS left in trainer paths because they were not set when resolving."""
        found: set[str] = set()
        for key in PATH_OPTIONS:
            found |= variables_in(str(self.trainer.get(key, "")))
        return sorted(found)

    def to_dict(self) -> dict:
        return {
            "job": {"name": self.name, "cluster": self.profile.name,
                    "recipe": str(self.recipe) if self.recipe else None},
            "plan": self.plan.to_dict(),
            "cluster": self.profile.to_dict(),
            "trainer": dict(self.trainer),
        }


def _trainer_options(profile: ClusterProfile, plan: Plan, recipe: Recipe | None) -> dict:
    options: dict[str, Any] = dict(TRAINER_DEFAULTS)
    if recipe is not None:
        options.update(recipe.trainer_options())
    for key in PATH_OPTIONS:
        if key in options:
            options[key] = expand_path(options[key])
    options.update({
        "model": plan.model,
        "batch_size": plan.per_gpu_batch,
        "batches_per_allreduce": plan.batches_per_allreduce,
        "epochs": plan.epochs,
        "base_lr": plan.base_lr,
        "lr_scaling": "keep",
        "warmup_epochs": plan.warmup_epochs,
        "epsilon": plan.epsilon,
        "engine": profile.engine,
        "amp": AMP[plan.precision],
    })
    options.setdefault("fp16_allreduce", plan.precision != "fp32")
    if profile.gpu_type == "cpu":
        options["no_cuda"] = True
    return dict(sorted(options.items()))


def resolve_job(profile: ClusterProfile | str, recipe: Recipe | str | Path | None = None,
                **overrides: Any) -> JobSpec:
    """Plan a job; raises ProfileError/RecipeError/PlanError (all UserError, exit 2)."""
    unknown = sorted(set(overrides) - set(PLAN_FLAGS))
    if unknown:
        raise TypeError(f"resolve_job() got unknown overrides: {', '.join(unknown)}")
    flags = {k: v for k, v in overrides.items() if v is not None}
    if not isinstance(profile, ClusterProfile):
        profile = load_profile(profile)
    recipe_path: Path | None = None
    if recipe is not None and not isinstance(recipe, Recipe):
        recipe, recipe_path = load_recipe(recipe)

    def pick(key: str, default: Any) -> Any:
        if key in flags:
            return flags[key]
        if recipe is not None and getattr(recipe, key, None) is not None:
            return getattr(recipe, key)
        return default

    model, precision = pick("model", "resnet50"), pick("precision", "fp32")
    per_gpu = pick("per_gpu_batch", None)
    target = pick("target_batch", None)
    if target is None and "gpus" in flags:
        # --gpus alone: fill those GPUs once, no accumulation.
        largest = max_per_gpu_batch(profile.gpu_type, model, precision)
        target = flags["gpus"] * (per_gpu or largest)
    if target is None:
        raise PlanError("no target batch: give --target-batch (or --gpus) or a --recipe that "
                        "sets target_batch")
    trainer_opts = recipe.trainer_options() if recipe is not None else {}
    request = PlanRequest(
        target_batch=target,
        model=model,
        precision=precision,
        epochs=pick("epochs", 90),
        lr_rule=pick("lr_rule", "legw"),
        gpus=flags.get("gpus"),
        per_gpu_batch=per_gpu,
        overrides=recipe.overrides() if recipe is not None else {},
        train_images=pick("train_images", PlanRequest.train_images),
        image_size=trainer_opts.get("image_size", 224),
        fp16_allreduce=trainer_opts.get("fp16_allreduce"),
        checkpoint_every_steps=trainer_opts.get("checkpoint_every_steps"),
    )
    plan = make_plan(Cluster.of(profile), request)
    name = flags.get("name") or (recipe.name if recipe is not None
                                 else f"{request.model}-b{target}")
    return JobSpec(name=name, profile=profile, recipe=recipe_path, plan=plan,
                   trainer=_trainer_options(profile, plan, recipe))
