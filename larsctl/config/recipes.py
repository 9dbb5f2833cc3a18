"""Job recipes (``jobs/*.yaml``): what to train, independent of the cluster.

A recipe names the model, the target effective batch, the epochs and precision,
optional per-GPU batch, the LR rule plus overrides of its numbers (``base_lr``,
``warmup_epochs``, ``epsilon``: the published 32K row's warmup and epsilon), and
a ``trainer:`` section of trainer options (same names as ``python -m trainer``
flags with ``_``).  Options the planner decides (batch_size, base_lr, ...) are
rejected there and must be set at the top level.  A ``tracking:`` section sends the job
to an experiment tracker (trainer.tracking.TrackingSettings: backend mlflow with a uri,
or wandb offline/online); ``submit --track`` overrides it.

The trainer section is derived from the trainer's own option table
(trainer/config.py); values are checked by the trainer's own ``check_value``.
Data paths in it (train_dir, val_dir, data_dir) may use ``~`` and ``$VAR``/``${VAR}``; they are expanded
when the job is resolved (``larsctl plan``/``submit``, on the login node), so the
job.yaml the trainer reads holds absolute paths.  A variable that is not set
stays as written and is reported by ``JobSpec.unset_variables``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
)

from larsctl.config.profiles import Name, choices
from larsctl.config.yamlio import load_model
from larsctl.errors import UserError
from larsctl.facts.hardware import MODELS, PRECISIONS
from larsctl.facts.rules import LR_RULES
from trainer.config import BY_NAME as OPTIONS_BY_NAME
from trainer.config import OPTIONS, Option, OptionValueError, check_value
from trainer.tracking import TrackingError, TrackingSettings


class RecipeError(UserError):
    """An invalid recipe file (exit 2, one line with file and line)."""


Model = choices("Model", *MODELS)
Precision = choices("Precision", *PRECISIONS)
LrRule = choices("LrRule", *LR_RULES)

# Trainer options whose value the planner decides, and where the user sets what they follow
# from: (recipe key at the top level, flag of plan/submit/script).  The job paths are the
# planner's too: report, tensorboard and resume look for the job's files in its directory.
PLANNER_OWNED: dict[str, tuple[str | None, str]] = {
    "batch_size": ("per_gpu_batch", "--per-gpu-batch"),
    "batches_per_allreduce": ("target_batch", "--target-batch"),
    "model": ("model", "--model"),
    "epochs": ("epochs", "--epochs"),
    "base_lr": ("base_lr", "--base-lr"),
    "warmup_epochs": ("warmup_epochs", "--warmup-epochs"),
    "epsilon": ("epsilon", "--epsilon"),
    "lr_scaling": ("base_lr", "--base-lr"),
    "amp": ("precision", "--precision"),
    "engine": (None, "the cluster profile's engine"),
    "out_dir": (None, "the job directory"),
    "log_dir": (None, "the job directory"),
    "checkpoint_format": (None, "the job directory"),
}
# Trainer paths a recipe may set: expanded (~, $VARS) when the job is resolved.
PATH_OPTIONS = ("train_dir", "val_dir", "data_dir")


def owned_message(option: str, flags: bool) -> str:
    """Why ``option`` cannot be set, and what to set instead (recipe key or command-line flag)."""
    key, flag = PLANNER_OWNED[option]
    if key is None:
        if flag == "the job directory":
            return ("decided by the planner: the job directory holds the checkpoints, event files "
                    "and metrics where report, tensorboard and resume look")
        return f"decided by the planner; set it in {flag}"
    final = " (jobs pass the final LR with lr_scaling keep)" if option == "lr_scaling" else ""
    return (f"decided by the planner{final}; use {flag}" if flags
            else f"decided by the planner{final}; set {key} at the top level")


def _trainer_field(opt: Option) -> Any:
    """A recipe field for one trainer option, checked by the trainer's own ``check_value``."""
    if opt.name in PLANNER_OWNED:
        def refuse(value: Any) -> Any:
            raise ValueError(owned_message(opt.name, flags=False))
        return Annotated[Any, AfterValidator(refuse)], None

    def check(value: Any) -> Any:
        try:
            return check_value(opt, value)
        except OptionValueError as exc:
            raise ValueError(str(exc)) from None
    return Annotated[Any, BeforeValidator(check)], None


# The recipe's `trainer:` section: every trainer option (python -m trainer flags, '-' -> '_').
TrainerOptions = create_model(
    "TrainerOptions", __config__=ConfigDict(extra="forbid"),
    **{opt.name: _trainer_field(opt) for opt in OPTIONS})


def check_trainer_sets(values: dict[str, Any], source: str = "--set") -> dict[str, Any]:
    """Command-line trainer options (``--set KEY=VALUE``), checked like a recipe's trainer section.

    Planner-owned keys name the flag to use instead; RecipeError (exit 2) on the first problem.
    """
    checked = {}
    for key, value in values.items():
        if key in PLANNER_OWNED:
            raise RecipeError(f"{source} {key}: {owned_message(key, flags=True)}")
        opt = OPTIONS_BY_NAME.get(key)
        if opt is None:
            raise RecipeError(f"{source} {key}: unknown trainer option; expected one of: "
                              f"{', '.join(sorted(set(OPTIONS_BY_NAME) - set(PLANNER_OWNED)))}")
        try:
            checked[key] = check_value(opt, value)
        except OptionValueError as exc:
            raise RecipeError(f"{source} {key}: {exc} (got {value!r})") from None
    return checked


def _check_tracking(value: dict | None) -> dict | None:
    if value is not None:
        try:
            TrackingSettings.from_dict(value, "tracking")
        except TrackingError as exc:
            raise ValueError(str(exc).removeprefix("tracking: ").removeprefix("tracking.")) from None
    return value


Tracking = Annotated[dict | None, AfterValidator(_check_tracking)]


class Recipe(BaseModel):
    """A recipe file; every field except ``name`` and ``target_batch`` has a default."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    name: Name
    description: str = ""
    model: Model = "resnet50"
    target_batch: int = Field(ge=1)
    per_gpu_batch: int | None = Field(None, ge=1)
    epochs: int = Field(90, ge=1)
    precision: Precision = "fp32"
    lr_rule: LrRule = "legw"
    base_lr: float | None = Field(None, gt=0)        # override of the rule's LR
    warmup_epochs: float | None = Field(None, ge=0)  # override of the rule's warmup
    epsilon: float | None = Field(None, ge=0)        # override of the rule's epsilon
    train_images: int | None = Field(None, ge=1)     # for the estimate; default ImageNet-1k
    trainer: TrainerOptions = TrainerOptions()
    tracking: Tracking = None                        # the experiment tracker (trainer.tracking)

    def trainer_options(self) -> dict[str, Any]:
        """The trainer section as set in the file (unset options left out)."""
        return self.trainer.model_dump(exclude_none=True)


def load_recipe(path: str | Path) -> tuple[Recipe, Path]:
    """Validate a recipe file; RecipeError (file:line: field: expected) when it is wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    recipe, _ = load_model(path, Recipe, RecipeError)
    return recipe, path
