"""Time estimate for a plan: per-GPU throughput plus a ring-allreduce cost model.

Pure functions, no I/O.  A run is

    total = start-up + steps * step + validations * val_images / (ranks * throughput * 3)

start-up per job from the hardware table (larsctl/facts/hardware.py); the steps as
the trainer counts them (each rank's share in full micro-batches, rounded down to whole
steps; ``max_steps`` ends the run early); a validation at every epoch end, every
``eval_every_steps`` inside an epoch and when ``max_steps`` stops mid-epoch, forward only
at ``VALIDATION_SPEEDUP`` times the training rate (forward + backward ~ 3 forwards;
2.6-3.3x measured on the demo).  Throughput per GPU is the table's, or, once jobs have
run on the profile, what they measured (larsctl/planning/measured.py gathers it and
passes it in).  One optimizer step of a data-parallel job is

    step = k * per_gpu_batch / throughput           (k = batches per allreduce)
         + t_allreduce                               (once per step, not per micro-batch)

    t_allreduce = 2 (N-1)/N * S / B  + 2 * ceil(log2 N) * alpha

with N ranks, S the gradient bytes (25.6M parameters for ResNet-50; 4 bytes, or 2
with fp16 allreduce), and B the slowest link of the ring: NVLink/PCIe inside one
node, the node's injection bandwidth (profile ``interconnect_gbps``, at
``LINK_EFFICIENCY`` of line rate) as soon as the ring crosses nodes.  Every node's
NIC carries 2(N-1)/N * S per allreduce in a ring, so the inter-node term does not
shrink with more GPUs per node.  The latency term is NCCL's tree latency
(log2 N hops up and down, NCCL >= 2.4), ``alpha`` per hop.  Computation and
communication are assumed not to overlap (conservative; Horovod overlaps part of
the allreduce with the backward pass).

Checked against published wall times (training and validation; start-up is not in
them) in tests/planner/test_estimate.py:
- Goyal et al. 2017 (arXiv 1706.02677): 256 P100, batch 8192 (32/GPU), 90 epochs,
  50 Gbit/s Ethernet, "1 hour"  -> model 1.05 h (within 10 %).
- MLPerf Training v0.6, NVIDIA, 96 DGX-2H = 1536 V100-SXM3-32GB, 39/GPU = batch
  59,904, mixed precision, 8x EDR InfiniBand per node (config_DGX2_multi.sh in
  mlcommons/training_results_v0.6: NUMEPOCHS=90, eval targeted at epoch 89),
  1.33 min -> model about 1.1 min for the 90-epoch schedule (within 25 %).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from larsctl.facts.hardware import CPU, GPUS, MODELS

if TYPE_CHECKING:
    from larsctl.planning.measured import Measured

IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_VAL_IMAGES = 50_000
VALIDATION_SPEEDUP = 3.0    # validation images/s over training images/s (forward only)
LINK_EFFICIENCY = 0.85      # NCCL bus bandwidth reaches ~85-90 % of IB/Ethernet line rate
INTER_NODE_ALPHA = 5e-6     # seconds per hop between nodes (IB/Aries + NCCL, order of 5 us)
INTRA_NODE_ALPHA = 1e-6     # seconds per hop over NVLink/PCIe/shared memory


@dataclass(frozen=True)
class Estimate:
    epoch_seconds: float        # one epoch's steps and its validation
    total_seconds: float        # start-up + train + validation (one job)
    gpu_hours: float
    step_seconds: float
    compute_seconds: float
    allreduce_seconds: float
    steps_per_epoch: int
    images_per_second: float
    assumptions: tuple[str, ...] = field(default=())
    # Defaults: job.yaml files written before these were estimated.
    steps: int = 0              # optimizer steps the run takes (max_steps counted)
    validations: int = 0
    train_seconds: float = 0.0
    validation_seconds: float = 0.0
    startup_seconds: float = 0.0
    throughput: str = ""        # the figure used: "table: ..." or "measured: ..."

    @property
    def work_seconds(self) -> float:
        """Training and validation: what chained jobs share (each pays its own start-up)."""
        return self.train_seconds + self.validation_seconds

    def to_dict(self) -> dict:
        data = asdict(self)
        data["assumptions"] = list(self.assumptions)
        for key, value in data.items():
            if isinstance(value, float):
                data[key] = round(value, 4)
        return data


def throughput(gpu_type: str, model: str, precision: str, image_size: int = 224) -> float:
    """Images/s per GPU, scaled from ResNet-50 at 224 px by forward FLOPs."""
    base = GPUS[gpu_type].throughput_rn50[precision]
    scale = MODELS["resnet50"].gflops_224 / MODELS[model].gflops_224 * (224 / image_size) ** 2
    return base * scale


def per_gpu_rate(gpu_type: str, model: str, precision: str, image_size: int,
                 measured: Measured | None = None) -> tuple[float, str]:
    """(images/s per GPU or CPU worker, which figure it is)."""
    unit = "worker" if gpu_type == CPU else "GPU"
    if measured is not None:
        return measured.images_per_second, measured.describe(unit)
    rate = throughput(gpu_type, model, precision, image_size)
    return rate, (f"table: {rate:,.0f} img/s per {unit} ({gpu_type}, {model}, {precision}, "
                  f"{image_size} px; larsctl/facts/hardware.py)")


def steps_per_epoch(train_images: int, ranks: int, per_gpu_batch: int,
                    batches_per_allreduce: int) -> int:
    """Optimizer steps per epoch as the trainer takes them: each rank's share in full
    micro-batches, rounded down to whole steps (never 0 here; the trainer refuses 0)."""
    return max(1, train_images // ranks // per_gpu_batch // batches_per_allreduce)


def validations(steps_per_epoch: int, steps: int, eval_every_steps: int | None = None) -> int:
    """Validations in a run of ``steps``: each epoch end, each ``eval_every_steps`` inside
    an epoch, and one at the end when the run stops mid-epoch (trainer/run.py)."""
    count = steps // steps_per_epoch + (1 if steps % steps_per_epoch else 0)
    if eval_every_steps:
        on_both = steps // math.lcm(eval_every_steps, steps_per_epoch)
        last = 1 if steps % eval_every_steps == 0 and steps % steps_per_epoch else 0
        count += steps // eval_every_steps - on_both - last
    return count


def default_val_images(train_images: int) -> int:
    """ImageNet-1k's 50,000, or that share of another training set's size."""
    if train_images == IMAGENET_TRAIN_IMAGES:
        return IMAGENET_VAL_IMAGES
    return max(1, round(train_images * IMAGENET_VAL_IMAGES / IMAGENET_TRAIN_IMAGES))


def allreduce_seconds(*, ranks: int, nodes: int, gpus_per_node: int, gpu_type: str,
                      interconnect_gbps: float, grad_bytes: float) -> float:
    """Ring allreduce of ``grad_bytes`` over ``ranks`` ranks on ``nodes`` nodes."""
    if ranks <= 1:
        return 0.0
    ring = 2 * (ranks - 1) / ranks * grad_bytes
    intra = GPUS[gpu_type].intra_node_gbytes * 1e9
    hops = 2 * math.ceil(math.log2(ranks))
    if nodes <= 1:
        return ring / intra + hops * INTRA_NODE_ALPHA
    inter = interconnect_gbps / 8 * 1e9 * LINK_EFFICIENCY
    # The ring is as fast as its slowest link; hops inside a node overlap with the NIC's.
    slowest = min(inter, intra) if gpus_per_node > 1 else inter
    return ring / slowest + hops * INTER_NODE_ALPHA


def estimate(*, gpu_type: str, model: str, precision: str, image_size: int, ranks: int,
             nodes: int, gpus_per_node: int, interconnect_gbps: float, per_gpu_batch: int,
             batches_per_allreduce: int, epochs: float, train_images: int,
             fp16_allreduce: bool, val_images: int | None = None, max_steps: int | None = None,
             eval_every_steps: int | None = None, measured: Measured | None = None) -> Estimate:
    k = batches_per_allreduce
    effective = ranks * per_gpu_batch * k
    rate, source = per_gpu_rate(gpu_type, model, precision, image_size, measured)
    compute = k * per_gpu_batch / rate
    grad_bytes = MODELS[model].parameters * (2 if fp16_allreduce else 4)
    comm = allreduce_seconds(ranks=ranks, nodes=nodes, gpus_per_node=gpus_per_node,
                             gpu_type=gpu_type, interconnect_gbps=interconnect_gbps,
                             grad_bytes=grad_bytes)
    step = compute + comm
    per_epoch = steps_per_epoch(train_images, ranks, per_gpu_batch, k)
    steps = math.ceil(per_epoch * epochs)
    steps = steps if max_steps is None else min(steps, max_steps)
    val_images = val_images or default_val_images(train_images)
    one_validation = val_images / (ranks * rate * VALIDATION_SPEEDUP)
    count = validations(per_epoch, steps, eval_every_steps)
    startup = GPUS[gpu_type].startup_seconds
    total = startup + steps * step + count * one_validation
    est = Estimate(epoch_seconds=per_epoch * step + one_validation, total_seconds=total,
                   gpu_hours=total * ranks / 3600, step_seconds=step, compute_seconds=compute,
                   allreduce_seconds=comm, steps_per_epoch=per_epoch,
                   images_per_second=effective / step, steps=steps, validations=count,
                   train_seconds=steps * step, validation_seconds=count * one_validation,
                   startup_seconds=startup, throughput=source)
    link = ("one node: intra-node ring at "
            f"{GPUS[gpu_type].intra_node_gbytes:g} GB/s" if nodes <= 1 else
            f"{nodes} nodes: ring through each node's {interconnect_gbps:g} Gbit/s link at "
            f"{LINK_EFFICIENCY:.0%} efficiency")
    assumptions = (
        f"throughput {source}",
        f"allreduce of {MODELS[model].parameters / 1e6:.1f}M parameters in "
        f"{'fp16' if fp16_allreduce else 'fp32'} ({grad_bytes / 1e6:.1f} MB) over {ranks} "
        f"ranks, {link}: {comm * 1e3:.2f} ms per step",
        "ring model 2(N-1)/N*S/B + 2*ceil(log2 N) hops of "
        f"{INTER_NODE_ALPHA * 1e6 if nodes > 1 else INTRA_NODE_ALPHA * 1e6:g} us; "
        "no overlap of compute and communication",
        *_run_assumptions(est, train_images, val_images, max_steps, epochs, gpu_type),
    )
    return replace(est, assumptions=assumptions)


def _run_assumptions(est: Estimate, train_images: int, val_images: int, max_steps: int | None,
                     epochs: float, gpu_type: str) -> tuple[str, ...]:
    stop = (f"max_steps {max_steps} of {math.ceil(est.steps_per_epoch * epochs)}"
            if max_steps is not None and max_steps < est.steps_per_epoch * epochs
            else f"{epochs:g} epochs")
    return (
        f"{train_images:,} training images, {est.steps_per_epoch} steps per epoch of "
        f"{est.step_seconds * 1e3:.1f} ms, {est.steps} steps ({stop})",
        f"{est.validations} validations of {val_images:,} images at {VALIDATION_SPEEDUP:g}x "
        f"the training rate: {est.validation_seconds:.1f} s",
        f"start-up {est.startup_seconds:g} s per job ({gpu_type}: launch, imports, engine, data "
        "scan, model build, exit; larsctl/facts/hardware.py); checkpoints and data loading "
        "beyond the throughput figure not counted",
    )
