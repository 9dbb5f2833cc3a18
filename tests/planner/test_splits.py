"""GPUs x per-GPU batch x batches-per-allreduce == target, on every shipped profile.

Policy under test: the per-GPU batch is the table's largest (unless given); the
GPU count is the largest that divides target/per_gpu, fits the cluster and is
either one (partial) node or whole nodes; the rest is gradient accumulation.
"""
from __future__ import annotations

import pytest

from larsctl.planning.planner import Cluster, PlanRequest, make_plan, max_per_gpu_batch
from larsctl.config.profiles import load_profile

# (profile, target, per-GPU batch or None) -> (nodes, ranks per node, per-GPU batch, k)
SPLITS = {
    ("local", 64, None): (1, 1, 64, 1),
    ("local", 128, None): (1, 2, 64, 1),
    ("local", 256, None): (1, 2, 64, 2),
    ("local", 1024, None): (1, 2, 64, 8),
    ("local", 96, 32): (1, 1, 32, 3),            # 3 batches of 32: one worker, k=3
    ("slurm-v100", 384, None): (1, 3, 128, 1),   # 3 GPUs fit one node
    ("slurm-v100", 512, None): (1, 4, 128, 1),
    ("slurm-v100", 768, None): (1, 3, 128, 2),   # 6 GPUs would be 1.5 nodes: 3 GPUs, k=2
    ("slurm-v100", 1024, None): (2, 4, 128, 1),
    ("slurm-v100", 32768, None): (64, 4, 128, 1),
    ("slurm-v100", 65536, None): (64, 4, 128, 2),
    ("slurm-v100", 32768, 64): (64, 4, 64, 2),   # the 32K recipe's per-GPU batch
    ("slurm-p100", 128, None): (1, 1, 128, 1),
    ("slurm-p100", 32768, None): (256, 1, 128, 1),
    ("slurm-p100", 131072, None): (512, 1, 128, 2),
    ("slurm-p100", 98304, None): (384, 1, 128, 2),  # 768 GPUs don't fit: 384, k=2
    ("pbs-v100", 1536, None): (1, 6, 128, 2),    # 12 GPUs would be 1.5 nodes
    ("pbs-v100", 3072, None): (3, 8, 128, 1),
    ("pbs-v100", 6144, None): (6, 8, 128, 1),    # the whole cluster
    ("pbs-v100", 8192, None): (4, 8, 128, 2),    # 64 GPUs > 48: 32 GPUs, k=2
    ("pbs-v100", 32768, 64): (4, 8, 64, 16),
}


# ImageNet on two CPU workers is infeasible (an epoch takes days): plan the demo's shape.
DEMO_SHAPE = {"model": "resnet18", "image_size": 32, "train_images": 1437}


def request(name: str, target: int, **kw) -> PlanRequest:
    return PlanRequest(target, **kw, **(DEMO_SHAPE if name == "local" else {}))


@pytest.mark.parametrize("name,target,per_gpu", list(SPLITS))
def test_split_on_shipped_profiles(name, target, per_gpu):
    nodes, per_node, per_gpu_batch, k = SPLITS[(name, target, per_gpu)]
    plan = make_plan(Cluster.of(load_profile(name)), request(name, target, per_gpu_batch=per_gpu))
    assert (plan.nodes, plan.gpus_per_node, plan.per_gpu_batch, plan.batches_per_allreduce) == \
        (nodes, per_node, per_gpu_batch, k)
    assert plan.gpus == nodes * per_node
    assert plan.gpus * plan.per_gpu_batch * plan.batches_per_allreduce == target


# explicit --gpus: (profile, target, gpus) -> (nodes, ranks per node, k)
EXPLICIT = {
    ("slurm-v100", 32768, 8): (2, 4, 32),
    ("slurm-v100", 3072, 6): (2, 3, 4),     # even spread over the fewest nodes
    ("slurm-v100", 896, 7): (7, 1, 1),      # 7 is prime: one GPU on each of 7 nodes
    ("pbs-v100", 8192, 16): (2, 8, 4),
    ("local", 256, 1): (1, 1, 4),
}


@pytest.mark.parametrize("name,target,gpus", sorted(EXPLICIT))
def test_explicit_gpu_count(name, target, gpus):
    nodes, per_node, k = EXPLICIT[(name, target, gpus)]
    plan = make_plan(Cluster.of(load_profile(name)), request(name, target, gpus=gpus))
    assert (plan.gpus, plan.nodes, plan.gpus_per_node, plan.batches_per_allreduce) == \
        (gpus, nodes, per_node, k)
    assert plan.rules["gpus"] == f"given: {gpus} GPUs on {nodes} node(s)"


# (gpu type, model, precision) -> largest per-GPU batch
TABLE = {
    ("V100-16GB", "resnet50", "fp32"): 128,
    ("V100-16GB", "resnet50", "fp16"): 256,
    ("V100-32GB", "resnet50", "fp32"): 256,
    ("P100-12GB", "resnet50", "fp32"): 64,
    ("P100-16GB", "resnet50", "fp16"): 256,
    ("A100-40GB", "resnet50", "bf16"): 512,
    ("A100-80GB", "resnet50", "fp32"): 512,
    ("H100-80GB", "resnet50", "fp16"): 1024,
    ("V100-16GB", "resnet18", "fp32"): 256,
    ("V100-16GB", "resnet101", "fp32"): 64,
    ("cpu", "resnet50", "fp32"): 64,
    ("cpu", "resnet18", "bf16"): 64,
}


@pytest.mark.parametrize("key", sorted(TABLE))
def test_per_gpu_batch_table(key):
    assert max_per_gpu_batch(*key) == TABLE[key]


def test_precision_and_model_reach_the_table_through_the_planner():
    v100 = Cluster.of(load_profile("slurm-v100"))
    assert make_plan(v100, PlanRequest(1024, precision="fp16")).per_gpu_batch == 256
    assert make_plan(v100, PlanRequest(1024, model="resnet101")).per_gpu_batch == 64
    assert make_plan(v100, PlanRequest(1024, model="resnet18")).per_gpu_batch == 256


def test_idle_gpus_get_a_hint_never_below_32_per_gpu():
    v100 = Cluster.of(load_profile("slurm-v100"))
    rules = make_plan(v100, PlanRequest(4096)).rules
    assert rules["gpus"] == ("largest count dividing 4096/128 = 32 that fits 256, whole nodes "
                             "beyond one node (--per-gpu-batch 32 would use 128, faster but less "
                             "efficient per GPU)")
    assert make_plan(v100, PlanRequest(32768)).rules["gpus"].endswith("whole nodes beyond one node")
