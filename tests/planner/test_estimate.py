"""The time model: ring-allreduce arithmetic, and published wall times it must come near.

Tolerances are what the model reaches with its documented tables (larsctl/planning/estimate.py):
Goyal et al. 2017 within 10 %, MLPerf v0.6 NVIDIA within 25 % (its 1.33 min include
evaluation every 4 epochs; the model validates every epoch as the trainer does).  Both
published times leave out start-up (MLPerf's clock starts after initialisation), so they
are compared with the estimate's training and validation (``work_seconds``).
"""
from __future__ import annotations

import math

import pytest

from larsctl.planning.estimate import (INTER_NODE_ALPHA, INTRA_NODE_ALPHA, LINK_EFFICIENCY,
                              allreduce_seconds, throughput)
from larsctl.planning.planner import Cluster, PlanRequest, make_plan

DAY = 86400


def test_goyal_2017_256_p100_8k_one_hour():
    # 32 Big Basin servers x 8 P100 (NVLink), 50 Gbit/s Ethernet; 32 images per GPU.
    cluster = Cluster("bigbasin", 32, 8, "P100-16GB", 50.0, DAY, 300)
    plan = make_plan(cluster, PlanRequest(8192, per_gpu_batch=32, epochs=90))
    assert (plan.gpus, plan.nodes, plan.batches_per_allreduce) == (256, 32, 1)
    hours = plan.estimate.work_seconds / 3600
    assert hours == pytest.approx(1.0, rel=0.10)
    assert plan.estimate.gpu_hours == pytest.approx(256 * plan.estimate.total_seconds / 3600)


def test_mlperf_v06_nvidia_1536_v100_1_33_minutes():
    # 96 DGX-2H x 16 V100-SXM3-32GB, 8 EDR InfiniBand ports per node, 39 per GPU (59,904),
    # mixed precision with fp16 allreduce; config_DGX2_multi.sh: NUMEPOCHS=90.
    cluster = Cluster("dgx2h", 96, 16, "V100-32GB", 800.0, DAY, 300)
    plan = make_plan(cluster, PlanRequest(59904, per_gpu_batch=39, precision="fp16", epochs=90))
    assert (plan.gpus, plan.nodes, plan.gpus_per_node) == (1536, 96, 16)
    assert plan.estimate.steps_per_epoch == 21  # 834 images per GPU: 21 full batches of 39
    minutes = plan.estimate.work_seconds / 60
    assert minutes == pytest.approx(1.33, rel=0.25)


def test_ring_allreduce_arithmetic():
    grad = 25.6e6 * 4
    # two nodes of 4 GPUs on 100 Gbit/s: the NIC is the slowest link of the ring
    got = allreduce_seconds(ranks=8, nodes=2, gpus_per_node=4, gpu_type="V100-16GB",
                            interconnect_gbps=100, grad_bytes=grad)
    expected = 2 * 7 / 8 * grad / (100 / 8 * 1e9 * LINK_EFFICIENCY) + 2 * 3 * INTER_NODE_ALPHA
    assert got == pytest.approx(expected, rel=1e-12)
    # one node: NVLink ring
    one = allreduce_seconds(ranks=4, nodes=1, gpus_per_node=4, gpu_type="V100-16GB",
                            interconnect_gbps=100, grad_bytes=grad)
    assert one == pytest.approx(2 * 3 / 4 * grad / 130e9 + 2 * 2 * INTRA_NODE_ALPHA, rel=1e-12)
    assert allreduce_seconds(ranks=1, nodes=1, gpus_per_node=1, gpu_type="cpu",
                             interconnect_gbps=1, grad_bytes=grad) == 0.0


def test_fp16_allreduce_halves_the_bandwidth_term():
    slurm = Cluster("c", 64, 4, "V100-16GB", 100.0, 2 * DAY, 300)
    fp32 = make_plan(slurm, PlanRequest(32768, precision="fp16", fp16_allreduce=False)).estimate
    fp16 = make_plan(slurm, PlanRequest(32768, precision="fp16")).estimate
    latency = 2 * math.ceil(math.log2(128)) * INTER_NODE_ALPHA
    assert fp16.allreduce_seconds - latency == pytest.approx((fp32.allreduce_seconds - latency) / 2)


def test_accumulation_pays_the_allreduce_once_per_step():
    slurm = Cluster("c", 2, 4, "V100-16GB", 100.0, 2 * DAY, 300)
    k1 = make_plan(slurm, PlanRequest(1024)).estimate
    k4 = make_plan(slurm, PlanRequest(4096)).estimate
    assert k4.allreduce_seconds == k1.allreduce_seconds
    assert k4.compute_seconds == pytest.approx(4 * k1.compute_seconds)
    assert k4.steps_per_epoch == 1_281_167 // 8 // 128 // 4  # full micro-batches, whole steps


def test_throughput_scales_by_model_flops_and_pixels():
    assert throughput("V100-16GB", "resnet50", "fp32") == 390.0
    assert throughput("cpu", "resnet50", "fp32", 112) == pytest.approx(16.0)
    assert throughput("V100-16GB", "resnet18", "fp32") == pytest.approx(390 * 4.11 / 1.82)


def test_assumptions_are_stated():
    plan = make_plan(Cluster("c", 2, 4, "V100-16GB", 100.0, DAY, 300), PlanRequest(1024))
    text = "\n".join(plan.estimate.assumptions)
    assert "throughput table: 390 img/s per GPU (V100-16GB, resnet50, fp32, 224 px" in text
    assert "allreduce of 25.6M parameters in fp32 (102.4 MB) over 8 ranks, 2 nodes" in text
    assert "1,281,167 training images, 1251 steps per epoch" in text
    assert "90 validations of 50,000 images" in text and "start-up 120 s per job" in text
