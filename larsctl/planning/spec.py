"""Resolve cluster + recipe + planner flags into one job spec (what job.yaml holds).

``resolve_job(profile, recipe=None, trainer=None, **flags)``: ``flags`` are the plan
flags (target_batch, gpus, per_gpu_batch, model, epochs, precision, lr_rule, base_lr,
warmup_epochs, epsilon, name, spread: PlanRequest.spread); a flag given (not None) wins over
the recipe.
``trainer`` holds trainer options from the command line (``--set``), merged into the
recipe's trainer section before planning, so the estimate and the walltime check see
them.  The resolved trainer section goes through the trainer's own validation.

``JobSpec.to_yaml()`` / ``JobSpec.from_yaml()`` are the one writer and reader of
job.yaml::

    job:     {name, cluster, recipe}
    plan:    {nodes, gpus, gpus_per_node, per_gpu_batch, ..., rules, estimate}
    cluster: {the profile}
    trainer: {flat trainer options, final LR with lr_scaling: keep}
    faults:  {bound_s, startup_s, crash_resumes, policy: {cause: resume|stop}} (trainer.supervisor)
    tracking: {backend, uri | mode, experiment, ...} (trainer.tracking; only when the job is tracked)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from larsctl.config.env import expand_path, variables_in
from larsctl.config.profiles import ClusterProfile, load_profile
from larsctl.config.recipes import PATH_OPTIONS, Recipe, check_trainer_sets, load_recipe
from larsctl.errors import UserError
from larsctl.facts.hardware import CPU
from larsctl.facts.rules import OVERRIDABLE
from larsctl.planning.estimate import Estimate
from larsctl.planning.planner import (
    Cluster,
    Plan,
    PlanError,
    PlanRequest,
    make_plan,
    max_per_gpu_batch,
)
from larsctl.planning.walltime import Walltime
from trainer.config import BY_NAME as TRAINER_OPTIONS
from trainer.config import JOB_DEFAULTS
from trainer.config import resolve as resolve_trainer
from trainer.errors import BadInput
from trainer.supervisor.causes import FaultSettings, SettingsError
from trainer.tracking import TrackingError, TrackingSettings, missing_library

PLAN_FLAGS = ("target_batch", "gpus", "per_gpu_batch", "model", "epochs", "precision",
              "lr_rule", *OVERRIDABLE, "name", "spread")
AMP = {"fp32": "off", "fp16": "fp16", "bf16": "bf16"}
DIGITS_IMAGES = 1797  # scikit-learn's digits (trainer/data/digits): 1,437 train, 360 val


class JobSpecError(UserError):
    """A job.yaml that cannot be read back as a job spec."""


def _trainer_key(name: str) -> str:
    return f"trainer.{name}"


@dataclass(frozen=True)
class JobSpec:
    name: str
    profile: ClusterProfile
    recipe: Path | None
    plan: Plan
    trainer: dict
    faults: FaultSettings = field(default_factory=FaultSettings)  # the profile's, then the submit's
    tracking: TrackingSettings | None = None  # the recipe's tracking:, then submit's --track

    @property
    def unset_variables(self) -> list[str]:
        """$VARS left in trainer paths because they were not set when resolving."""
        found: set[str] = set()
        for key in PATH_OPTIONS:
            found |= variables_in(str(self.trainer.get(key, "")))
        return sorted(found)

    def check_runnable(self) -> None:
        """The trainer's own validation of the whole job, data included, and the tracker's library
        (UserError, exit 2)."""
        _validate_trainer(self.trainer, require_data=True)
        missing = missing_library(self.tracking.backend) if self.tracking is not None else None
        if missing:
            raise PlanError(missing)

    # -- job.yaml ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = {
            "job": {"name": self.name, "cluster": self.profile.name,
                    "recipe": str(self.recipe) if self.recipe else None},
            "plan": self.plan.to_dict(),
            "cluster": self.profile.to_dict(),
            "trainer": dict(self.trainer),
            "faults": self.faults.to_dict(),
        }
        if self.tracking is not None:
            data["tracking"] = self.tracking.to_dict()
        # JSON round trip: paths and enums become plain strings.
        return json.loads(json.dumps(data, default=str))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict, source: str = "job.yaml") -> JobSpec:
        try:
            job, plan = data["job"], dict(data["plan"])
            estimate = dict(plan.pop("estimate"))
            estimate["assumptions"] = tuple(estimate.get("assumptions", ()))
            walltime = plan.pop("walltime", None)  # absent in job.yaml from before requests
            recipe = job.get("recipe")
            return cls(name=job["name"], profile=ClusterProfile.model_validate(data["cluster"]),
                       recipe=Path(recipe) if recipe else None,
                       plan=Plan(**plan, estimate=Estimate(**estimate),
                                 walltime=Walltime(**walltime) if walltime else None),
                       trainer=dict(data["trainer"]),
                       faults=FaultSettings.from_dict(data.get("faults"), f"{source}: faults"),
                       tracking=_tracking(data.get("tracking"), f"{source}: tracking"))
        except KeyError as exc:
            raise JobSpecError(f"{source}: not a larsctl job spec: missing {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise JobSpecError(f"{source}: not a larsctl job spec: {exc}") from None

    @classmethod
    def from_yaml(cls, text: str, source: str = "job.yaml") -> JobSpec:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise JobSpecError(f"{source}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(data, dict):
            raise JobSpecError(f"{source}: expected a mapping with job/plan/cluster/trainer sections")
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, path: Path) -> JobSpec:
        """The spec in ``path`` (a job.yaml); OSError when it cannot be read."""
        return cls.from_yaml(Path(path).read_text(), str(path))


def _tracking(section: dict | None, where: str = "tracking") -> TrackingSettings | None:
    """A ``tracking:`` mapping as settings, its paths absolute (the job runs elsewhere)."""
    if not section:
        return None
    return TrackingSettings.from_dict(section, where).absolute(expand=expand_path)


def _validate_trainer(options: dict, require_data: bool) -> None:
    try:
        resolve_trainer(options, {}, source="trainer", require_data=require_data, where=_trainer_key)
    except BadInput as exc:
        raise PlanError(str(exc)) from None


def _trainer_options(profile: ClusterProfile, plan: Plan, requested: dict) -> dict:
    options: dict[str, Any] = {**JOB_DEFAULTS, **requested}
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
    if profile.gpu_type == CPU:
        options["no_cuda"] = True
    return dict(sorted(options.items()))


def _val_images(requested: dict) -> int | None:
    """Validation images of the builtin and synthetic data sets (None: the planner's default)."""
    if requested.get("data") == "synthetic":
        length = requested.get("synthetic_length", TRAINER_OPTIONS["synthetic_length"].default)
        return max(1, length // 5)  # trainer/data _synthetic: an 80/20 split
    if requested.get("dataset") == "digits":
        from trainer.data.digits import VAL_FRACTION

        return math.ceil(DIGITS_IMAGES * VAL_FRACTION)  # train_test_split rounds the test share up
    return None


def resolve_job(profile: ClusterProfile | str, recipe: Recipe | str | Path | None = None,
                trainer: dict | None = None, faults: dict | None = None,
                measured: Callable[[str, str, int, str], Any] | None = None, **flags: Any) -> JobSpec:
    """Plan a job; raises ProfileError/RecipeError/PlanError (all UserError, exit 2).

    ``faults``: fault settings of this submit (``--on-fault``...) over the profile's ``faults:``.
    ``measured``: (profile, model, image size, precision) -> what finished jobs measured there
    (larsctl.jobs.history.measured_throughput); None: the hardware table's figure.
    """
    unknown = sorted(set(flags) - set(PLAN_FLAGS))
    if unknown:
        raise TypeError(f"resolve_job() got unknown flags: {', '.join(unknown)}")
    flags = {k: v for k, v in flags.items() if v is not None}
    if not isinstance(profile, ClusterProfile):
        profile = load_profile(profile)
    recipe_path: Path | None = None
    if recipe is not None and not isinstance(recipe, Recipe):
        recipe, recipe_path = load_recipe(recipe)
    requested = {**(recipe.trainer_options() if recipe is not None else {}),
                 **check_trainer_sets(trainer or {})}

    def pick(key: str, default: Any) -> Any:
        if key in flags:
            return flags[key]
        if recipe is not None and getattr(recipe, key, None) is not None:
            return getattr(recipe, key)
        return default

    model, precision = pick("model", "resnet50"), pick("precision", "fp32")
    image_size = requested.get("image_size", 224)
    per_gpu = pick("per_gpu_batch", None)
    target = pick("target_batch", None)
    if target is None and "gpus" in flags:
        # --gpus alone: fill those GPUs once, no accumulation.
        largest = max_per_gpu_batch(profile.gpu_type, model, precision)
        target = flags["gpus"] * (per_gpu or largest)
    if target is None:
        raise PlanError("no target batch: give --target-batch (or --gpus) or a --recipe that "
                        "sets target_batch")
    request = PlanRequest(
        target_batch=target,
        model=model,
        precision=precision,
        epochs=pick("epochs", 90),
        lr_rule=pick("lr_rule", "legw"),
        gpus=flags.get("gpus"),
        per_gpu_batch=per_gpu,
        overrides={key: pick(key, None) for key in OVERRIDABLE if pick(key, None) is not None},
        override_from={key: "--" + key.replace("_", "-") for key in OVERRIDABLE if key in flags},
        train_images=pick("train_images", PlanRequest.train_images),
        image_size=image_size,
        fp16_allreduce=requested.get("fp16_allreduce"),
        checkpoint_every_steps=requested.get("checkpoint_every_steps"),
        val_images=_val_images(requested),
        max_steps=requested.get("max_steps"),
        eval_every_steps=requested.get("eval_every_steps"),
        measured=measured(profile.name, model, image_size, precision) if measured else None,
        spread=bool(flags.get("spread")),
    )
    plan = make_plan(Cluster.of(profile), request)
    name = flags.get("name") or (recipe.name if recipe is not None
                                 else f"{request.model}-b{target}")
    options = _trainer_options(profile, plan, requested)
    # Everything but the data (a plan may come before its data): the trainer's rules.
    _validate_trainer(options, require_data=False)
    try:
        settings = profile.fault_settings().with_overrides(faults or {}, "--on-fault")
    except SettingsError as exc:
        raise PlanError(str(exc)) from None
    try:
        tracking = _tracking(recipe.tracking if recipe is not None else None)
    except TrackingError as exc:
        raise PlanError(str(exc)) from None
    # The recipe as an absolute path: job.yaml is read later from anywhere (noise, report, resume).
    return JobSpec(name=name, profile=profile, recipe=recipe_path.resolve() if recipe_path is not None else None,
                   plan=plan, trainer=options, faults=settings, tracking=tracking)

