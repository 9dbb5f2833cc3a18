"""Time estimate for a plan: per-GPU throughput plus a ring-allreduce cost model.

Pure functions, no I/O.  One optimizer step of a data-parallel job is

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

Checked against published wall times in tests/planner/test_estimate.py:
- Goyal et al. 2017 (arXiv 1706.02677): 256 P100, batch 8192 (32/GPU), 90 epochs,
  50 Gbit/s Ethernet, "1 hour"  -> model 1.05 h (within 10 %).
- MLPerf Training v0.6, NVIDIA, 96 DGX-2H = 1536 V100-SXM3-32GB, 39/GPU = batch
  59,904, mixed precision, 8x EDR InfiniBand per node (config_DGX2_multi.sh in
  mlcommons/training_results_v0.6: NUMEPOCHS=90, eval targeted at epoch 89),
  1.33 min -> model about 1.1 min for the 90-epoch schedule (within 25 %).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from larsctl.planning.hardware import CPU, GPUS, MODELS

IMAGENET_TRAIN_IMAGES = 1_281_167
LINK_EFFICIENCY = 0.85      # NCCL bus bandwidth reaches ~85-90 % of IB/Ethernet line rate
INTER_NODE_ALPHA = 5e-6     # seconds per hop between nodes (IB/Aries + NCCL, order of 5 us)
INTRA_NODE_ALPHA = 1e-6     # seconds per hop over NVLink/PCIe/shared memory


@dataclass(frozen=True)
class Estimate:
    epoch_seconds: float
    total_seconds: float
    gpu_hours: float
    step_seconds: float
    compute_seconds: float
    allreduce_seconds: float
    steps_per_epoch: int
    images_per_second: float
    assumptions: tuple[str, ...] = field(default=())

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
             fp16_allreduce: bool) -> Estimate:
    effective = ranks * per_gpu_batch * batches_per_allreduce
    rate = throughput(gpu_type, model, precision, image_size)
    compute = batches_per_allreduce * per_gpu_batch / rate
    bytes_per_param = 2 if fp16_allreduce else 4
    grad_bytes = MODELS[model].parameters * bytes_per_param
    comm = allreduce_seconds(ranks=ranks, nodes=nodes, gpus_per_node=gpus_per_node,
                             gpu_type=gpu_type, interconnect_gbps=interconnect_gbps,
                             grad_bytes=grad_bytes)
    step = compute + comm
    steps_per_epoch = math.ceil(train_images / effective)
    epoch = steps_per_epoch * step
    total = epoch * epochs
    link = ("one node: intra-node ring at "
            f"{GPUS[gpu_type].intra_node_gbytes:g} GB/s" if nodes <= 1 else
            f"{nodes} nodes: ring through each node's {interconnect_gbps:g} Gbit/s link at "
            f"{LINK_EFFICIENCY:.0%} efficiency")
    assumptions = (
        f"throughput {rate:,.0f} img/s per {'worker' if gpu_type == CPU else 'GPU'} "
        f"({gpu_type}, {model}, {precision}, {image_size} px; see larsctl/planning/hardware.py)",
        f"allreduce of {MODELS[model].parameters / 1e6:.1f}M parameters in "
        f"{'fp16' if fp16_allreduce else 'fp32'} ({grad_bytes / 1e6:.1f} MB) over {ranks} "
        f"ranks, {link}: {comm * 1e3:.2f} ms per step",
        "ring model 2(N-1)/N*S/B + 2*ceil(log2 N) hops of "
        f"{INTER_NODE_ALPHA * 1e6 if nodes > 1 else INTRA_NODE_ALPHA * 1e6:g} us; "
        "no overlap of compute and communication",
        f"{train_images:,} training images, {steps_per_epoch} steps per epoch of "
        f"{step * 1e3:.1f} ms; data loading, validation and start-up not counted",
    )
    return Estimate(epoch_seconds=epoch, total_seconds=total,
                    gpu_hours=total * ranks / 3600, step_seconds=step,
                    compute_seconds=compute, allreduce_seconds=comm,
                    steps_per_epoch=steps_per_epoch, images_per_second=effective / step,
                    assumptions=assumptions)
