"""Job recipes (``jobs/*.yaml``): what to train, independent of the cluster.

A recipe names the model, the target effective batch, the epochs and precision,
optional per-GPU batch, the LR rule plus overrides of its numbers (``base_lr``,
``warmup_epochs``, ``epsilon``: the published 32K row's warmup and epsilon), and
a ``trainer:`` section of trainer options (same names as ``python -m trainer``
flags with ``_``).  Options the planner decides (batch_size, base_lr, ...) are
rejected there and must be set at the top level.

Paths in the trainer section (train_dir, val_dir, data_dir, log_dir, out_dir,
checkpoint_format) may use ``~`` and ``$VAR``/``${VAR}``; they are expanded
when the job is resolved (``larsctl plan``/``submit``, on the login node), so the
job.yaml the trainer reads holds absolute paths.  A variable that is not set
stays as written and is reported by ``JobSpec.unset_variables``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from larsctl.errors import UserError
from larsctl.config.profiles import Name, choices
from larsctl.config.yamlio import load_model

PATH_OPTIONS = ("train_dir", "val_dir", "data_dir", "log_dir", "out_dir", "checkpoint_format")


class RecipeError(UserError):
    """An invalid recipe file (exit 2, one line with file and line)."""


Model = choices("Model", "resnet18", "resnet50", "resnet101")
Precision = choices("Precision", "fp32", "fp16", "bf16")
LrRule = choices("LrRule", "legw", "sqrt", "linear")


def _planner_owned(where: str):
    def reject(value: Any) -> Any:
        raise ValueError(f"decided by the planner; {where}")
    return AfterValidator(reject)


def Owned(where: str) -> Any:  # noqa: N802 - builds a type, used like one
    """A trainer option the planner sets: present in a recipe -> one-line error."""
    return Annotated[Any, _planner_owned(where)]


class TrainerOptions(BaseModel):
    """Trainer options a recipe may set (python -m trainer flags, '-' -> '_')."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    # Decided by the planner from the recipe's top level and the cluster.
    batch_size: Owned("set per_gpu_batch at the top level") = None
    batches_per_allreduce: Owned("set target_batch (and per_gpu_batch) at the top level") = None
    model: Owned("set model at the top level") = None
    epochs: Owned("set epochs at the top level") = None
    base_lr: Owned("set base_lr at the top level") = None
    warmup_epochs: Owned("set warmup_epochs at the top level") = None
    epsilon: Owned("set epsilon at the top level") = None
    lr_scaling: Owned("jobs pass the final LR (lr_scaling keep); set base_lr at the top level") = None
    engine: Owned("set engine in the cluster profile") = None
    amp: Owned("set precision at the top level") = None

    data: Literal["imagefolder", "dali", "synthetic"] | None = None
    dataset: Literal["digits"] | None = None
    train_dir: str | None = None
    val_dir: str | None = None
    data_dir: str | None = None
    log_dir: str | None = None
    out_dir: str | None = None
    checkpoint_format: str | None = None
    image_size: int | None = Field(None, ge=8)
    val_batch_size: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=0)
    fp16_allreduce: bool | None = None
    momentum: float | None = Field(None, ge=0, lt=1)
    wd: float | None = Field(None, ge=0)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    base_op: Literal["lars", "lamb", "sgd"] | None = None
    bn_bias_separately: bool | None = None
    lr_power: float | None = Field(None, gt=0)
    end_lr: float | None = Field(None, ge=0)
    lars_mode: Literal["nus", "tf"] | None = None
    eeta: float | None = Field(None, gt=0)
    no_cuda: bool | None = None
    seed: int | None = None
    max_steps: int | None = Field(None, ge=1)
    checkpoint_every_steps: int | None = Field(None, ge=1)
    keep_checkpoints: int | None = Field(None, ge=1)
    log_every_steps: int | None = Field(None, ge=1)
    channels_last: bool | None = None
    num_classes: int | None = Field(None, ge=2)
    synthetic_length: int | None = Field(None, ge=1)
    norm: Literal["batch", "group"] | None = None
    deterministic: bool | None = None


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

    def overrides(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("base_lr", "warmup_epochs", "epsilon")
                if getattr(self, k) is not None}

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
