"""Trainer options: one table drives argparse, job.yaml merging and validation.

The `trainer:` section of a larsctl job.yaml uses the same names as the flags with
`_` for `-`.  `resolve()` is pure: it merges defaults <- YAML <- flags, checks types
and ranges, and returns a frozen `TrainConfig` or raises `BadInput`.

This table is the one schema of trainer options: larsctl derives its recipe
model's `trainer:` section from it (larsctl/config/recipes.py, checking each value
with `check_value`), and the defaults of larsctl jobs (`JOB_DEFAULTS`: the published
LARS ResNet-50 settings where they differ from the reference script's flag defaults).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from trainer.errors import BadInput


@dataclass(frozen=True)
class Option:
    name: str  # attribute / YAML key (underscores)
    type: type  # int, float, str or bool (bool = store_true flag)
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None  # inclusive lower bound for numbers
    positive: bool = False  # strictly > 0
    below: float | None = None  # exclusive upper bound for numbers
    job_default: Any = None  # what larsctl jobs use when a recipe is silent (None: `default`)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# The optimizers the trainer builds: --base-op's choices, trainer.optim's registry (one entry
# each, in this order) and larsctl's sweep choices all import this one tuple.
OPTIMIZER_NAMES: tuple[str, ...] = ("lars", "lamb", "sgd")

OPTIONS: tuple[Option, ...] = (
    # --- the reference script's flags (same meaning) ---
    Option("train_dir", str, None, "ImageFolder training directory (one sub-folder per class)."),
    Option("val_dir", str, None, "ImageFolder validation directory (same class folders as --train-dir)."),
    Option("data_dir", str, None, "DALI TFRecord root: train/*, validation/*, idx_files/{train,validation}/*."),
    Option("log_dir", str, None, "TensorBoard directory (default: OUT_DIR/tensorboard). Never timestamped, "
           "so a restarted job writes to the same place."),
    Option("checkpoint_format", str, None, "Checkpoint path pattern with {step} and/or {epoch} "
           "(default: OUT_DIR/checkpoints/checkpoint-{step:08d}.pt)."),
    Option("fp16_allreduce", bool, False, "Compress gradients to fp16 for the allreduce."),
    Option("batches_per_allreduce", int, 1, "Micro-batches accumulated locally per optimizer step (k); "
           "effective batch = batch_size x workers x k.", minimum=1),
    Option("model", str, "resnet50", "torchvision.models classification model name (no pretrained weights)."),
    Option("batch_size", int, 32, "Micro-batch size per worker.", minimum=1),
    Option("val_batch_size", int, 32, "Validation batch size per worker.", minimum=1),
    Option("epochs", int, 90, "Epochs to train (the LR schedule decays over epochs x steps_per_epoch).",
           minimum=1),
    Option("base_lr", float, 0.0125, "Learning rate before --lr-scaling.", positive=True),
    Option("warmup_epochs", float, 5.0, "Linear warm-up length in (fractional) epochs.", minimum=0),
    Option("momentum", float, 0.9, "Momentum (0..1).", minimum=0, below=1),
    Option("wd", float, 5e-5, "Weight decay.", minimum=0, job_default=1e-4),
    Option("epsilon", float, 1e-5, "LARS/LAMB epsilon added to the norm ratio denominator.", minimum=0),
    Option("label_smoothing", float, 0.0, "Label smoothing of the cross-entropy loss (0..1).", minimum=0,
           below=1, job_default=0.1),
    Option("base_op", str, "lars", "Optimizer.", choices=OPTIMIZER_NAMES),
    Option("bn_bias_separately", bool, False, "Exclude BatchNorm and bias parameters from LARS adaptation "
           "and weight decay.", job_default=True),
    Option("lr_scaling", str, "keep", "keep: lr = base_lr; linear: base_lr x workers x k; "
           "sqrt: base_lr x sqrt(workers x k).", choices=("keep", "linear", "sqrt")),
    Option("no_cuda", bool, False, "Train on CPU even when a GPU is present."),
    Option("seed", int, 42, "Seed of model init, data order, augmentation and every per-step RNG.", minimum=0),
    # --- new ---
    Option("engine", str, "ddp", "Distributed engine: ddp (torch.distributed; torchrun, srun or mpirun) "
           "or horovod (horovodrun, mpirun, srun --mpi=pmix).", choices=("horovod", "ddp")),
    Option("data", str, None, "Data pipeline (default: dali with --data-dir, else imagefolder).",
           choices=("imagefolder", "dali", "synthetic")),
    Option("dataset", str, None, "Builtin real data set, materialised under $LARSCTL_DATA in both layouts "
           "and used as train/val/data dirs.", choices=("digits",)),
    Option("image_size", int, 224, "Training crop / validation size in pixels.", minimum=8),
    Option("num_classes", int, None, "Classes of --data synthetic (real data sets take theirs from the "
           "class folders).", minimum=2),
    Option("synthetic_length", int, 12800, "Samples per epoch of --data synthetic.", minimum=1),
    Option("max_steps", int, None, "Stop after this many optimizer steps (the schedule still spans "
           "--epochs).", minimum=1),
    Option("checkpoint_every_steps", int, None, "Also checkpoint every N optimizer steps (always at "
           "each epoch end, on SIGUSR2/SIGTERM and at the end).", minimum=1),
    Option("keep_checkpoints", int, 3, "Checkpoints kept (oldest deleted).", minimum=1),
    Option("amp", str, "off", "Mixed precision autocast; fp16 uses a GradScaler.",
           choices=("off", "fp16", "bf16")),
    Option("channels_last", bool, False, "Use the channels_last memory format for model and inputs."),
    Option("out_dir", str, ".", "Job directory: tensorboard/, checkpoints/, metrics.jsonl."),
    Option("lr_power", float, 2.0, "Power of the polynomial LR decay.", minimum=0),
    Option("end_lr", float, 0.0, "LR at the end of the decay.", minimum=0),
    Option("lars_mode", str, "nus", "LARS trust-ratio formula (nus: the paper's, tf: TensorFlow's).",
           choices=("nus", "tf")),
    Option("eeta", float, 0.001, "LARS trust coefficient.", positive=True),
    Option("workers", int, 4, "Data-loader worker processes per rank (0: load in the main process).",
           minimum=0),
    Option("log_every_steps", int, 10, "Optimizer steps between train metrics lines.", minimum=1),
    Option("norm", str, "batch", "Normalisation layer of ResNet-family models: batch (BatchNorm) or "
           "group (GroupNorm, 32 groups; independent of the micro-batch size).", choices=("batch", "group")),
    Option("deterministic", bool, False, "torch.use_deterministic_algorithms(True) and no cuDNN "
           "benchmarking: bit-identical reruns and resumes."),
    Option("no_noise_scale", bool, False, "Do not measure the gradient noise scale B_simple (measured by "
           "default from the micro-batch and allreduced gradient norms, at no extra communication; logged "
           "as noise_scale and gns_* in metrics.jsonl; needs 2+ ranks or --batches-per-allreduce 2+)."),
    Option("noise_scale_every", int, 8, "Measure the gradient noise scale on every Nth optimizer step only "
           "(its averages keep about 100 steps of memory whatever N; 8 keeps its cost under 1 percent of a 32 px "
           "ResNet-18 CPU step, bench/RESULTS.md; 1: every step, the least noisy estimate).", minimum=1),
    Option("eval_every_steps", int, None, "Also validate every N optimizer steps (always at each epoch end): "
           "steps-to-target with the resolution a batch-size sweep needs.", minimum=1),
    Option("stop_at_val_accuracy", float, None, "End the run (done, exit 0) after the first validation whose "
           "top-1 reaches this fraction (a sweep measures steps to a target, not beyond).", positive=True),
)
BY_NAME = {o.name: o for o in OPTIONS}
# larsctl jobs train with the published LARS ResNet-50 settings (reference README: weight
# decay 1e-4, label smoothing 0.1, BatchNorm and bias excluded) unless a recipe says otherwise.
JOB_DEFAULTS = {o.name: o.job_default for o in OPTIONS if o.job_default is not None}


@dataclass(frozen=True)
class TrainConfig:
    train_dir: str | None
    val_dir: str | None
    data_dir: str | None
    log_dir: str | None
    checkpoint_format: str | None
    fp16_allreduce: bool
    batches_per_allreduce: int
    model: str
    batch_size: int
    val_batch_size: int
    epochs: int
    base_lr: float
    warmup_epochs: float
    momentum: float
    wd: float
    epsilon: float
    label_smoothing: float
    base_op: str
    bn_bias_separately: bool
    lr_scaling: str
    no_cuda: bool
    seed: int
    engine: str
    data: str | None
    dataset: str | None
    image_size: int
    num_classes: int | None
    synthetic_length: int
    max_steps: int | None
    checkpoint_every_steps: int | None
    keep_checkpoints: int
    amp: str
    channels_last: bool
    out_dir: str
    lr_power: float
    end_lr: float
    lars_mode: str
    eeta: float
    workers: int
    log_every_steps: int
    norm: str
    deterministic: bool
    no_noise_scale: bool
    noise_scale_every: int
    eval_every_steps: int | None
    stop_at_val_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (stored in checkpoints loaded with weights_only=True)."""
        return dataclasses.asdict(self)


assert [f.name for f in dataclasses.fields(TrainConfig)] == [o.name for o in OPTIONS]


class OptionValueError(ValueError):
    """What a value of one option should have been (`expected ...`), without where it came from."""


def _coerce(opt: Option, value: Any) -> Any:
    """Type-check one value from YAML (flags are already typed by argparse)."""
    if value is None:
        if opt.default is None:
            return None
        raise OptionValueError(f"expected {opt.type.__name__}, not null")
    if opt.type is bool:
        if not isinstance(value, bool):
            raise OptionValueError("expected true or false")
        return value
    if opt.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionValueError("expected an integer")
        return value
    if opt.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionValueError("expected a number")
        return float(value)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise OptionValueError("expected a string")
    return str(value)


def _check(opt: Option, value: Any) -> None:
    if value is None:
        return
    if opt.choices is not None and value not in opt.choices:
        raise OptionValueError(f"expected one of {', '.join(opt.choices)}" if len(opt.choices) > 1
                               else f"expected {opt.choices[0]}")
    if opt.type in (int, float):
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionValueError("expected a finite number")
        if opt.minimum is not None and value < opt.minimum:
            raise OptionValueError(f"expected >= {opt.minimum:g}")
        if opt.positive and value <= 0:
            raise OptionValueError("expected > 0")
        if opt.below is not None and value >= opt.below:
            raise OptionValueError(f"expected < {opt.below:g}")


def check_value(opt: Option, value: Any) -> Any:
    """``value`` of option ``opt``, typed (ints as floats for float options) and range-checked;
    OptionValueError says what was expected."""
    value = _coerce(opt, value)
    _check(opt, value)
    return value


def resolve(from_file: Mapping[str, Any], from_flags: Mapping[str, Any], source: str = "--config",
            require_data: bool = True, where: Callable[[str], str] | None = None) -> TrainConfig:
    """Merge defaults <- file <- flags; every value is type- and range-checked.

    ``require_data=False`` accepts a config without any data source (larsctl plans
    jobs before their data is known; it refuses to submit them).  ``where(name)`` names
    an option in messages (default: its flag, or ``<source>: name`` when it came from
    the file).
    """
    values = {o.name: o.default for o in OPTIONS}
    for key, value in from_file.items():
        opt = BY_NAME.get(str(key).replace("-", "_"))
        if opt is None:
            raise BadInput(f"{source}: {key}: unknown trainer option (valid: {', '.join(sorted(BY_NAME))})")
        try:
            values[opt.name] = _coerce(opt, value)
        except OptionValueError as exc:
            raise BadInput(f"{source}: {key}: {exc}, got {value!r}") from None
    values.update(from_flags)

    def default_where(name: str) -> str:
        return f"{source}: {name}" if name in from_file and name not in from_flags else BY_NAME[name].flag

    where = where or default_where

    for opt in OPTIONS:
        try:
            _check(opt, values[opt.name])
        except OptionValueError as exc:
            raise BadInput(f"{where(opt.name)}: {exc}, got {values[opt.name]!r}") from None
    cfg = TrainConfig(**values)
    _check_combinations(cfg, where, require_data)
    return cfg


def _check_combinations(cfg: TrainConfig, where, require_data: bool) -> None:
    if cfg.warmup_epochs > cfg.epochs:
        raise BadInput(f"{where('warmup_epochs')}: {cfg.warmup_epochs:g} is longer than "
                       f"{where('epochs')} {cfg.epochs}")
    if cfg.checkpoint_format is not None and "{step" not in cfg.checkpoint_format \
            and "{epoch" not in cfg.checkpoint_format:
        raise BadInput(f"{where('checkpoint_format')}: {cfg.checkpoint_format!r} needs a {{step}} or {{epoch}} field")
    if cfg.checkpoint_format is not None:
        try:
            cfg.checkpoint_format.format(step=0, epoch=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise BadInput(f"{where('checkpoint_format')}: {cfg.checkpoint_format!r}: only {{step}} and {{epoch}} "
                           f"fields are known ({exc})") from None
    if cfg.data == "synthetic":
        return
    if cfg.num_classes is not None:
        raise BadInput(f"{where('num_classes')}: applies to data synthetic only; real data sets take it from "
                       "the data")
    if not require_data:
        return
    if cfg.dataset is None and cfg.data_dir is None and cfg.train_dir is None:
        raise BadInput(f"no data: give {where('dataset')} digits, {where('train_dir')}/{where('val_dir')}, "
                       f"{where('data_dir')}, or {where('data')} synthetic")
    if cfg.dataset is None:
        if data_kind(cfg) == "imagefolder" and (cfg.train_dir is None or cfg.val_dir is None):
            raise BadInput(f"{where('data')} imagefolder needs both {where('train_dir')} and {where('val_dir')}")
        if data_kind(cfg) == "dali" and cfg.data_dir is None:
            raise BadInput(f"{where('data')} dali needs {where('data_dir')} (TFRecord root)")


def data_kind(cfg: TrainConfig) -> str:
    if cfg.data is not None:
        return cfg.data
    return "dali" if cfg.data_dir is not None and cfg.train_dir is None else "imagefolder"


def scaled_lr(base_lr: float, rule: str, workers: int, batches_per_allreduce: int) -> float:
    """The reference computed sqrt(base_lr * N) for sqrt; this is base_lr * sqrt(N)."""
    n = workers * batches_per_allreduce
    if rule == "keep":
        return base_lr
    if rule == "linear":
        return base_lr * n
    if rule == "sqrt":
        return base_lr * math.sqrt(n)
    raise ValueError(f"lr_scaling {rule!r}")
