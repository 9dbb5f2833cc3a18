"""The large-batch planner: how to reach a target effective batch on a cluster.

Pure functions returning frozen dataclasses; no I/O.  A request is infeasible ->
``PlanError`` (a ValueError and a UserError: exit 2), one line with the reason and
a suggestion.

Per-GPU batch
    The largest per-GPU batch that fits each GPU type (larsctl/facts/hardware.py,
    ResNet-50 at 224 px, scaled for other models and rounded down to a power of two).
    ``--per-gpu-batch`` overrides the table but may not exceed it.  A sweep's points, from a
    batch of 4 to 32K on one profile, ask for ``spread``: the batch over the most GPUs it fills,
    each with the largest per-GPU batch that divides its share and fits.
    A batch larger than the training set (``train_images``) is refused: no epoch has a step.

GPUs and accumulation (policy)
    gpus * per_gpu_batch * batches_per_allreduce == target exactly.  With m =
    target / per_gpu_batch, the planner takes the largest GPU count g that divides
    m, fits the cluster, and is either at most one node or a whole number of full
    nodes (multi-node jobs use whole nodes: schedulers charge them whole and a
    uniform ranks-per-node layout is what mpirun/srun launch); then k = m / g.
    ``--gpus`` fixes g; it is spread evenly over the fewest nodes that hold it.

Learning rate, warmup, epsilon (B = effective batch)
    legw    (You et al. 2019, arXiv 1901.08256, anchored on the reference LARS
            ResNet-50 table): lr = 2^2 * sqrt(B/512), warmup = (10/64) * B/512
            epochs, epsilon 1e-5.  Reproduces the six published rows; only the 32K
            row deviates (warmup 14, epsilon 0.0), carried as recipe overrides.
    sqrt    (Krizhevsky 2014; Hoffer et al. 2017): lr = 2^2 * sqrt(B/512), warmup a
            constant 5 epochs, epsilon 1e-5.
    linear  (Goyal et al. 2017, arXiv 1706.02677): lr = 0.1 * B/256, warmup 5
            epochs, epsilon 1e-5 (a rule made for momentum SGD).
    The job passes the final LR with ``lr_scaling: keep``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from larsctl.errors import UserError
from larsctl.facts.hardware import CPU, GPUS, MODELS, PRECISIONS
from larsctl.facts.rules import LR_RULES, OVERRIDABLE
from larsctl.format import duration, number, power_form, warmup_form
from larsctl.planning.estimate import IMAGENET_TRAIN_IMAGES, Estimate, estimate
from larsctl.planning.measured import Measured
from larsctl.planning.walltime import (
    DEFAULT_FACTOR,
    DEFAULT_MINIMUM_SECONDS,
    Walltime,
    request_walltime,
)

MIN_HINT_BATCH = 32

LEGW_LR0, LEGW_B0, LEGW_WARMUP0, EPSILON = 4.0, 512, Fraction(10, 64), 1e-5
SQRT_WARMUP = 5.0
LINEAR_LR0, LINEAR_B0, LINEAR_WARMUP = 0.1, 256, 5.0


class PlanError(UserError, ValueError):
    """An infeasible plan: the reason and a suggestion, one line (exit 2)."""


@dataclass(frozen=True)
class Cluster:
    """What the planner needs of a cluster profile (ClusterProfile.* has the same names)."""

    name: str
    nodes: int
    gpus_per_node: int
    gpu_type: str
    interconnect_gbps: float
    walltime_seconds: int
    signal_margin_seconds: int
    walltime_factor: float = DEFAULT_FACTOR            # profile walltime_margin.factor
    walltime_minimum_seconds: int = DEFAULT_MINIMUM_SECONDS  # profile walltime_margin.minimum
    walltime: str | None = None                        # the profile's own form of walltime_seconds

    @classmethod
    def of(cls, profile) -> Cluster:
        margin = profile.walltime_margin
        return cls(profile.name, profile.nodes, profile.gpus_per_node, profile.gpu_type,
                   profile.interconnect_gbps, profile.walltime_seconds,
                   profile.signal_margin_seconds, margin.factor, margin.minimum,
                   profile.walltime)

    @property
    def max_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class PlanRequest:
    target_batch: int
    model: str = "resnet50"
    precision: str = "fp32"
    epochs: int = 90
    lr_rule: str = "legw"
    gpus: int | None = None
    per_gpu_batch: int | None = None
    overrides: Mapping[str, float] = field(default_factory=dict)  # base_lr, warmup_epochs, epsilon
    override_from: Mapping[str, str] = field(default_factory=dict)  # key -> "--base-lr" (else recipe)
    train_images: int = IMAGENET_TRAIN_IMAGES
    image_size: int = 224
    fp16_allreduce: bool | None = None  # None: follow precision
    checkpoint_every_steps: int | None = None
    val_images: int | None = None  # None: ImageNet's 50,000, or that share of train_images
    max_steps: int | None = None   # the trainer stops after these optimizer steps
    eval_every_steps: int | None = None  # validations inside epochs too
    measured: Measured | None = None  # finished jobs' images/s on this profile, else the table
    # No per-GPU batch given: spread the batch over the most GPUs it fills (a sweep's points, from
    # 4 to 32K on one profile), each with the largest per-GPU batch that divides its share and fits.
    spread: bool = False


@dataclass(frozen=True)
class Plan:
    nodes: int
    gpus: int
    gpus_per_node: int
    per_gpu_batch: int
    batches_per_allreduce: int
    effective_batch: int
    base_lr: float
    warmup_epochs: float
    epsilon: float
    lr_rule: str
    rules: dict
    estimate: Estimate
    model: str = "resnet50"
    precision: str = "fp32"
    epochs: int = 90
    jobs_needed: int = 1
    walltime: Walltime | None = None  # what each job asks for; None in job.yaml from before

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rules"] = dict(self.rules)
        data["estimate"] = self.estimate.to_dict()
        return data


def _pow2_floor(value: float) -> int:
    return 1 << int(math.floor(math.log2(value))) if value >= 1 else 1


def max_per_gpu_batch(gpu_type: str, model: str, precision: str) -> int:
    """Largest per-GPU batch that fits (power of two); PlanError if unsupported."""
    table = GPUS[gpu_type].max_batch_rn50
    if precision not in table:
        hint = ("--precision bf16 or --precision fp32" if gpu_type == CPU else
                "--precision fp16 (bf16 needs A100 or H100)")
        raise PlanError(f"precision {precision} is not supported on {gpu_type}; "
                        f"suggestion: {hint}")
    if gpu_type == CPU:
        return table[precision]
    return _pow2_floor(table[precision] * MODELS[model].batch_factor)


def lr_by_rule(rule: str, batch: int) -> tuple[float, float, float, dict]:
    """(lr, warmup epochs, epsilon, rule texts) for an effective batch."""
    if rule == "legw":
        lr = LEGW_LR0 * math.sqrt(batch / LEGW_B0)
        warmup = float(LEGW_WARMUP0 * batch / LEGW_B0)
        texts = {"base_lr": f"legw: 2^2*sqrt({batch}/512) = {power_form(lr) or number(lr)}",
                 "warmup_epochs": f"legw: (10/64)*{batch}/512 = {warmup_form(warmup) or number(warmup)}"}
    elif rule == "sqrt":
        lr = LEGW_LR0 * math.sqrt(batch / LEGW_B0)
        warmup = SQRT_WARMUP
        texts = {"base_lr": f"sqrt: 2^2*sqrt({batch}/512) = {power_form(lr) or number(lr)}",
                 "warmup_epochs": f"sqrt: constant {warmup:g} epochs"}
    elif rule == "linear":
        lr = LINEAR_LR0 * batch / LINEAR_B0
        warmup = LINEAR_WARMUP
        texts = {"base_lr": f"linear: 0.1*{batch}/256 = {lr:g}",
                 "warmup_epochs": f"linear: constant {warmup:g} epochs (Goyal et al.)"}
    else:
        raise PlanError(f"lr rule {rule!r} is unknown; expected one of: {', '.join(LR_RULES)}")
    texts["epsilon"] = f"{rule}: {EPSILON:g}"
    return lr, warmup, EPSILON, texts


def _nearest(target: int, unit: int) -> str:
    below = target // unit * unit
    options = [v for v in (below, below + unit) if v > 0]
    return " or ".join(str(v) for v in options)


def _layout(gpus: int, cluster: Cluster) -> tuple[int, int]:
    """(nodes, ranks per node) for an explicit GPU count: fewest nodes, even spread."""
    if gpus <= cluster.gpus_per_node:
        return 1, gpus
    nodes = math.ceil(gpus / cluster.gpus_per_node)
    while gpus % nodes:
        nodes += 1
    if nodes > cluster.nodes:
        per = cluster.gpus_per_node
        fits = sorted({per * (gpus // per), per * math.ceil(gpus / per)} - {0})
        raise PlanError(f"{gpus} GPUs cannot be spread evenly over at most {cluster.nodes} "
                        f"nodes of {per} GPUs; suggestion: --gpus "
                        + " or --gpus ".join(str(f) for f in fits if f <= cluster.max_gpus))
    return nodes, gpus // nodes


def _auto_gpus(m: int, cluster: Cluster) -> int:
    """Largest g | m that fits and is one partial node or whole nodes."""
    per = cluster.gpus_per_node
    for g in range(min(m, cluster.max_gpus), 0, -1):
        if m % g == 0 and (g <= per or g % per == 0):
            return g
    return 1


def _spread_hint(target: int, per_gpu: int, gpus: int, cluster: Cluster) -> str:
    """When GPUs stay idle, the smaller per-GPU batch that would use more of them.

    Never below MIN_HINT_BATCH: BatchNorm statistics come from each GPU's own batch
    (Goyal et al. keep 32 per GPU).
    """
    smaller = per_gpu
    while smaller // 2 >= MIN_HINT_BATCH and target % (smaller // 2) == 0 and \
            target // (smaller // 2) <= cluster.max_gpus:
        smaller //= 2
    more = _auto_gpus(target // smaller, cluster)
    if smaller == per_gpu or more <= gpus:
        return ""
    return f" (--per-gpu-batch {smaller} would use {more}, faster but less efficient per GPU)"


def _spread(req: PlanRequest, cluster: Cluster, largest: int) -> tuple[int, str] | None:
    """(per-GPU batch, rule) of ``req.spread``: the largest that divides the batch's share of the
    most GPUs it fills (or of ``req.gpus``) and fits (the table's largest, and a per-GPU batch the
    recipe gives is a cap too); None when not asked or the share is no integer."""
    if not req.spread:
        return None
    gpus = req.gpus or _auto_gpus(req.target_batch, cluster)
    if req.target_batch % gpus:
        return None
    cap = min(largest, req.per_gpu_batch) if req.per_gpu_batch else largest
    share = req.target_batch // gpus
    per_gpu = next(d for d in range(min(cap, share), 0, -1) if share % d == 0)
    return per_gpu, (f"spread: the largest dividing the share of {gpus} GPU(s), {share}, that fits "
                     f"{cluster.gpu_type} ({cap})")


def _check_request(req: PlanRequest, cluster: Cluster) -> None:
    if req.model not in MODELS:
        raise PlanError(f"model {req.model!r} has no batch/throughput table; "
                        f"expected one of: {', '.join(MODELS)}")
    if req.precision not in PRECISIONS:
        raise PlanError(f"precision {req.precision!r} is unknown; expected one of: "
                        f"{', '.join(PRECISIONS)}")
    for name in ("target_batch", "epochs", "gpus", "per_gpu_batch", "val_images", "max_steps",
                 "eval_every_steps"):
        value = getattr(req, name)
        if value is not None and value < 1:
            raise PlanError(f"{name.replace('_', '-')} {value} must be at least 1")
    if req.target_batch > req.train_images:
        raise PlanError(f"target batch {req.target_batch} is more than the {req.train_images} training images "
                        f"(train_images): an epoch would have no step; suggestion: --target-batch "
                        f"{_pow2_floor(req.train_images)} or less")
    if req.gpus is not None and req.gpus > cluster.max_gpus:
        raise PlanError(f"--gpus {req.gpus} is more than cluster {cluster.name} has "
                        f"({cluster.nodes} nodes x {cluster.gpus_per_node} = "
                        f"{cluster.max_gpus}); suggestion: --gpus {cluster.max_gpus} "
                        "(the planner accumulates the rest)")


def make_plan(cluster: Cluster, req: PlanRequest) -> Plan:
    """Resolve a request on a cluster into a Plan, or raise PlanError."""
    _check_request(req, cluster)
    rules: dict[str, str] = {}
    largest = max_per_gpu_batch(cluster.gpu_type, req.model, req.precision)
    spread = _spread(req, cluster, largest)
    if spread is not None:
        per_gpu, rules["per_gpu_batch"] = spread
    elif req.per_gpu_batch is None:
        per_gpu = largest
        rules["per_gpu_batch"] = (f"table: largest power of two that fits {cluster.gpu_type} "
                                  f"for {req.model} {req.precision}")
    else:
        per_gpu = req.per_gpu_batch
        if per_gpu > largest:
            raise PlanError(
                f"per-GPU batch {per_gpu} does not fit in {cluster.gpu_type} memory for "
                f"{req.model} {req.precision} (largest {largest}); suggestion: "
                f"--per-gpu-batch {largest}, the planner then accumulates "
                f"{math.ceil(per_gpu / largest)}x more batches per allreduce")
        rules["per_gpu_batch"] = "given (recipe or --per-gpu-batch)"

    target = req.target_batch
    minimum = per_gpu * (req.gpus or 1)
    if target < minimum:
        what = f"{req.gpus} GPUs x {per_gpu}" if req.gpus else f"one GPU's batch {per_gpu}"
        # a power of two that divides the target: the split stays exact
        fitting = min(target & -target, _pow2_floor(target / (req.gpus or 1)))
        fix = (f"--gpus {max(1, target // per_gpu)}" if req.gpus and target >= per_gpu
               else f"--per-gpu-batch {fitting}")
        raise PlanError(f"target batch {target} is below the minimum {minimum} "
                        f"({what}); suggestion: {fix} or --target-batch {minimum}")
    unit = per_gpu * (req.gpus or 1)
    if target % unit:
        what = f"{req.gpus} GPUs x per-GPU batch {per_gpu}" if req.gpus else \
            f"per-GPU batch {per_gpu}"
        raise PlanError(f"target batch {target} is not a multiple of {unit} ({what}); "
                        f"nearest feasible targets: {_nearest(target, unit)}")
    m = target // per_gpu
    if req.gpus:
        gpus = req.gpus
        nodes, per_node = _layout(gpus, cluster)
        rules["gpus"] = f"given: {gpus} GPUs on {nodes} node(s)"
    else:
        gpus = _auto_gpus(m, cluster)
        nodes, per_node = (1, gpus) if gpus <= cluster.gpus_per_node else \
            (gpus // cluster.gpus_per_node, cluster.gpus_per_node)
        rules["gpus"] = (f"largest count dividing {target}/{per_gpu} = {m} that fits "
                         f"{cluster.max_gpus}, whole nodes beyond one node")
        rules["gpus"] += _spread_hint(target, per_gpu, gpus, cluster)
    k = m // gpus
    rules["batches_per_allreduce"] = (f"{target} / ({gpus} x {per_gpu}) = {k}"
                                      + (" (gradient accumulation)" if k > 1 else ""))

    lr, warmup, epsilon, texts = lr_by_rule(req.lr_rule, target)
    rules.update(texts)
    chosen = {"base_lr": lr, "warmup_epochs": warmup, "epsilon": epsilon}
    for key, value in req.overrides.items():
        if key not in OVERRIDABLE:
            raise PlanError(f"override {key!r} is unknown; expected one of: "
                            f"{', '.join(OVERRIDABLE)}")
        if value is not None:
            source = req.override_from.get(key, "recipe")
            rules[key] = f"{source} override ({req.lr_rule} gives {chosen[key]:g})"
            chosen[key] = float(value)

    fp16_allreduce = (req.precision != "fp32") if req.fp16_allreduce is None \
        else req.fp16_allreduce
    est = estimate(gpu_type=cluster.gpu_type, model=req.model, precision=req.precision,
                   image_size=req.image_size, ranks=gpus, nodes=nodes,
                   gpus_per_node=per_node, interconnect_gbps=cluster.interconnect_gbps,
                   per_gpu_batch=per_gpu, batches_per_allreduce=k, epochs=req.epochs,
                   train_images=req.train_images, fp16_allreduce=fp16_allreduce,
                   val_images=req.val_images, max_steps=req.max_steps,
                   eval_every_steps=req.eval_every_steps, measured=req.measured)
    _check_walltime(est, req, cluster, gpus, k > 1)
    walltime = request_walltime(
        work_seconds=est.work_seconds, startup_seconds=est.startup_seconds,
        maximum_seconds=cluster.walltime_seconds, maximum_text=cluster.walltime,
        signal_margin_seconds=cluster.signal_margin_seconds, factor=cluster.walltime_factor,
        minimum_seconds=cluster.walltime_minimum_seconds)
    return Plan(nodes=nodes, gpus=gpus, gpus_per_node=per_node, per_gpu_batch=per_gpu,
                batches_per_allreduce=k, effective_batch=target,
                base_lr=chosen["base_lr"], warmup_epochs=chosen["warmup_epochs"],
                epsilon=chosen["epsilon"], lr_rule=req.lr_rule, rules=rules, estimate=est,
                model=req.model, precision=req.precision, epochs=req.epochs,
                jobs_needed=walltime.jobs, walltime=walltime)


def _check_walltime(est: Estimate, req: PlanRequest, cluster: Cluster, gpus: int,
                    accumulating: bool) -> None:
    """PlanError if not even one chunk of work (an epoch, or the steps between
    checkpoints) fits in a job."""
    usable = cluster.walltime_seconds - cluster.signal_margin_seconds
    if req.checkpoint_every_steps:
        chunk = req.checkpoint_every_steps * est.step_seconds
        if chunk > usable:
            steps = max(1, int(usable * 0.8 / est.step_seconds))
            raise PlanError(
                f"{req.checkpoint_every_steps} steps between checkpoints take "
                f"~{duration(chunk)} but a job may run {duration(usable)}; "
                f"suggestion: checkpoint_every_steps: {steps} in the recipe's trainer section")
        return
    if est.epoch_seconds > usable:
        steps = max(1, int(usable * 0.8 / est.step_seconds))
        more = ""
        if gpus < cluster.max_gpus:
            more = (f"use more GPUs (--gpus, up to {cluster.max_gpus}) or " if accumulating
                    else "spread over more GPUs with a smaller --per-gpu-batch or ")
        raise PlanError(
            f"one epoch takes ~{duration(est.epoch_seconds)} (estimate) but a job on "
            f"{cluster.name} may run {duration(usable)} (walltime minus "
            f"{cluster.signal_margin_seconds}s signal margin); suggestion: {more}chain jobs "
            f"that checkpoint mid-epoch: checkpoint_every_steps: {steps} in the recipe's "
            "trainer section")
