"""Every infeasible request: PlanError (exit 2) with the exact reason and suggestion."""
from __future__ import annotations

import pytest

from larsctl.errors import UserError
from larsctl.planning.planner import Cluster, PlanError, PlanRequest, make_plan
from larsctl.config.profiles import load_profile
from larsctl.planning.spec import resolve_job

# two nodes of 4 V100, 10 min walltime, 5 min signal margin
TINY = Cluster("tiny", 2, 4, "V100-16GB", 100.0, 600, 300)

CASES = {
    "batch_above_the_training_images": (
        "slurm-v100", PlanRequest(2048, train_images=1437),
        "target batch 2048 is more than the 1437 training images (train_images): an epoch would have no step; "
        "suggestion: --target-batch 1024 or less"),
    "target_below_one_gpu": (
        "slurm-v100", PlanRequest(64),
        "target batch 64 is below the minimum 128 (one GPU's batch 128); suggestion: "
        "--per-gpu-batch 64 or --target-batch 128"),
    "target_below_the_gpus_minimum": (
        "slurm-v100", PlanRequest(1024, gpus=16),
        "target batch 1024 is below the minimum 2048 (16 GPUs x 128); suggestion: --gpus 8 or "
        "--target-batch 2048"),
    "more_gpus_than_the_cluster": (
        "slurm-v100", PlanRequest(32768, gpus=512),
        "--gpus 512 is more than cluster slurm-v100 has (64 nodes x 4 = 256); suggestion: "
        "--gpus 256 (the planner accumulates the rest)"),
    "per_gpu_batch_does_not_fit": (
        "slurm-v100", PlanRequest(32768, per_gpu_batch=256),
        "per-GPU batch 256 does not fit in V100-16GB memory for resnet50 fp32 (largest 128); "
        "suggestion: --per-gpu-batch 128, the planner then accumulates 2x more batches per "
        "allreduce"),
    "per_gpu_batch_does_not_fit_p100_12gb": (
        Cluster("p100", 4, 2, "P100-12GB", 56.0, 86400, 300), PlanRequest(1024, per_gpu_batch=128),
        "per-GPU batch 128 does not fit in P100-12GB memory for resnet50 fp32 (largest 64); "
        "suggestion: --per-gpu-batch 64, the planner then accumulates 2x more batches per "
        "allreduce"),
    "bf16_on_v100": (
        "slurm-v100", PlanRequest(32768, precision="bf16"),
        "precision bf16 is not supported on V100-16GB; suggestion: --precision fp16 "
        "(bf16 needs A100 or H100)"),
    "fp16_on_cpu": (
        "local", PlanRequest(256, precision="fp16"),
        "precision fp16 is not supported on cpu; suggestion: --precision bf16 or --precision fp32"),
    "no_exact_split": (
        "slurm-v100", PlanRequest(1000),
        "target batch 1000 is not a multiple of 128 (per-GPU batch 128); nearest feasible "
        "targets: 896 or 1024"),
    "no_exact_split_with_gpus": (
        "slurm-v100", PlanRequest(1024, gpus=3),
        "target batch 1024 is not a multiple of 384 (3 GPUs x per-GPU batch 128); nearest "
        "feasible targets: 768 or 1152"),
    "uneven_over_too_few_nodes": (
        TINY, PlanRequest(896, gpus=7),
        "7 GPUs cannot be spread evenly over at most 2 nodes of 4 GPUs; suggestion: --gpus 4 "
        "or --gpus 8"),
    "walltime_shorter_than_an_epoch": (
        TINY, PlanRequest(512),
        "one epoch takes ~13m55s (estimate) but a job on tiny may run 5m00s (walltime minus "
        "300s signal margin); suggestion: spread over more GPUs with a smaller --per-gpu-batch "
        "or chain jobs that checkpoint mid-epoch: checkpoint_every_steps: 728 in the recipe's "
        "trainer section"),
    "walltime_shorter_than_an_epoch_while_accumulating": (
        TINY, PlanRequest(1024, gpus=2),
        "one epoch takes ~27m45s (estimate) but a job on tiny may run 5m00s (walltime minus "
        "300s signal margin); suggestion: use more GPUs (--gpus, up to 8) or chain jobs that "
        "checkpoint mid-epoch: checkpoint_every_steps: 182 in the recipe's trainer section"),
    "walltime_shorter_than_the_checkpoint_interval": (
        TINY, PlanRequest(512, checkpoint_every_steps=5000),
        "5000 steps between checkpoints take ~27m27s but a job may run 5m00s; suggestion: "
        "checkpoint_every_steps: 728 in the recipe's trainer section"),
    "unknown_model": (
        "slurm-v100", PlanRequest(512, model="vgg16"),
        "model 'vgg16' has no batch/throughput table; expected one of: smallcnn, resnet18, "
        "resnet50, resnet101"),
    "unknown_rule": (
        "slurm-v100", PlanRequest(512, lr_rule="cubic"),
        "lr rule 'cubic' is unknown; expected one of: legw, sqrt, linear"),
    "zero_epochs": ("slurm-v100", PlanRequest(512, epochs=0), "epochs 0 must be at least 1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_infeasible_request_says_why_and_what_to_do(case):
    cluster, request, message = CASES[case]
    if isinstance(cluster, str):
        cluster = Cluster.of(load_profile(cluster))
    with pytest.raises(PlanError) as info:
        make_plan(cluster, request)
    assert info.value.message == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)
    assert info.value.exit_code == 2


def test_checkpointing_mid_epoch_makes_a_short_walltime_feasible():
    plan = make_plan(TINY, PlanRequest(512, checkpoint_every_steps=700, epochs=2))
    assert plan.estimate.epoch_seconds > 300
    # 2 epochs of ~13.9 min in 5-minute jobs that each start up for 2 minutes: 3 minutes of work
    assert plan.jobs_needed == plan.walltime.jobs == 10


def test_resolve_job_without_a_target():
    with pytest.raises(PlanError) as info:
        resolve_job("local")
    assert info.value.message == ("no target batch: give --target-batch (or --gpus) or a --recipe "
                                  "that sets target_batch")


def test_gpus_alone_fills_them_once():
    plan = resolve_job("slurm-v100", gpus=16).plan
    assert (plan.effective_batch, plan.gpus, plan.per_gpu_batch, plan.batches_per_allreduce) == \
        (2048, 16, 128, 1)
