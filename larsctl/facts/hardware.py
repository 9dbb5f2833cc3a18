"""Hardware and model facts, one table each: what every GPU type and model brings.

The profile schema (``gpu_type``), the recipe schema (``model``, ``precision``), the
planner (largest per-GPU batch) and the estimate (throughput, allreduce bandwidth,
gradient size) all read these tables; nothing else lists GPU types or models.

Largest per-GPU batch (ResNet-50, 224 px, training), rounded down to a power of two
after scaling for other models:
  - 16 GB V100/P100 fp32: 128, the reference LARS table's own per-GPU "Batchsize"
    column (its 1K-16K rows ran 128 per GPU on V100/P100 16 GB); NVIDIA
    DeepLearningExamples runs 256 per 16 GB V100 with mixed precision.
  - P100-12GB: 64 fp32 / 128 fp16 (12/16 of the 16 GB batch, rounded down).
  - 32/40 GB: 256 fp32 / 512 fp16-bf16; 80 GB: 512 / 1024 (activation memory is
    ~linear in the batch: ~100 MB per image in fp32, half with AMP, plus ~1 GB of
    weights, optimizer state and cuDNN workspace).
  - bf16 needs Ampere or newer (not offered on V100/P100).
  - cpu workers: 64 whatever the model (host memory is not the limit; a default that
    keeps a step of a few seconds).
ResNet-50 training throughput, images/s per GPU at 224 px, large per-GPU batch:
  - V100: NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5, DGX-1V: ~390 img/s FP32,
    ~1,200 img/s mixed precision (DALI).
  - P100: Goyal et al. 2017: 90 epochs on 8 P100 took 29 h = 1,104 img/s = ~140 img/s per
    GPU (Caffe2, 32/GPU); the PCIe 12 GB part runs ~10 % slower clocks.  P100 has fp16
    arithmetic but no tensor cores: mixed precision gains ~1.3x.
  - A100: DeepLearningExamples PyTorch ResNet-50, DGX A100: ~800 img/s TF32 (what fp32
    convolutions use by default), ~2,500 img/s AMP; bf16 runs at the fp16 rate.
  - H100: ~1.8x A100 (MLPerf Training v3.0 per-accelerator ResNet ratio).
  - cpu: one worker process on one core, PyTorch fp32: ~4 img/s (measured order of
    magnitude for ResNet-50 at 224 px; used only for the local profile).
Start-up, seconds per job (process start to the first step, plus the end: launcher, imports,
engine and process-group start, data set scan, model build, the final checkpoint and exit):
  - GPUs: 120 s, an order of magnitude, not measured here: mpirun/srun across nodes, torch and
    Horovod imported from a shared file system, CUDA and NCCL start, an ImageFolder scan of
    ImageNet's 1.28M files (DALI reads index files instead).
  - cpu: 15 s, measured on the demo (2 workers on 2 cores, 2026-12-03): 9.3 s from submit to
    the trainer's start event, 6 s from its done event to the job's end (29 s to the start
    event on the same machine under a load of 5 from other processes).
Ring bus bandwidth inside one node, GB/s (NCCL all_reduce busbw orders of magnitude):
V100 SXM2 NVLink ~130, P100 SXM2 NVLink ~60, P100 PCIe ~10, A100 NVLink3 ~230,
H100 NVLink4 ~370, CPU workers over shared memory (Gloo) ~5.
Models: parameters (the gradient an allreduce moves) and forward GFLOPs at 224 px from
the torchvision model docs (smallcnn: counted from its two convolutions); ResNet-18 keeps ~half the activations of ResNet-50 (x2
batch), ResNet-101 ~1.6x (x0.5).
"""
from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Gpu:
    memory_gb: float | None          # None for CPU workers
    max_batch_rn50: dict[str, int]   # precision -> largest ResNet-50 per-GPU batch
    throughput_rn50: dict[str, float]  # precision -> images/s per GPU (ResNet-50, 224 px)
    intra_node_gbytes: float         # ring bus bandwidth inside one node, GB/s
    startup_seconds: float = 120.0   # per job: launch, imports, engine, data scan, model build, exit

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(p for p in PRECISIONS if p in self.max_batch_rn50)


GPUS: dict[str, Gpu] = {
    "V100-16GB": Gpu(16, {"fp32": 128, "fp16": 256}, {"fp32": 390.0, "fp16": 1200.0}, 130.0),
    "V100-32GB": Gpu(32, {"fp32": 256, "fp16": 512}, {"fp32": 390.0, "fp16": 1200.0}, 130.0),
    "P100-12GB": Gpu(12, {"fp32": 64, "fp16": 128}, {"fp32": 125.0, "fp16": 160.0}, 10.0),
    "P100-16GB": Gpu(16, {"fp32": 128, "fp16": 256}, {"fp32": 140.0, "fp16": 180.0}, 60.0),
    "A100-40GB": Gpu(40, {"fp32": 256, "fp16": 512, "bf16": 512},
                     {"fp32": 800.0, "fp16": 2500.0, "bf16": 2500.0}, 230.0),
    "A100-80GB": Gpu(80, {"fp32": 512, "fp16": 1024, "bf16": 1024},
                     {"fp32": 800.0, "fp16": 2500.0, "bf16": 2500.0}, 230.0),
    "H100-80GB": Gpu(80, {"fp32": 512, "fp16": 1024, "bf16": 1024},
                     {"fp32": 1450.0, "fp16": 4500.0, "bf16": 4500.0}, 370.0),
    "cpu": Gpu(None, {"fp32": 64, "bf16": 64}, {"fp32": 4.0, "bf16": 4.0}, 5.0, 15.0),
}
CPU = "cpu"  # the gpu_type of CPU worker processes (the local profile)


@dataclass(frozen=True)
class Model:
    parameters: float   # trainable parameters (gradient elements per allreduce)
    gflops_224: float   # forward GFLOPs per image at 224 px
    batch_factor: float  # largest batch relative to ResNet-50 (activation memory)


MODELS: dict[str, Model] = {
    # trainer/models.py's two-convolution test network (10K parameters; tiny activations),
    # for CPU experiments and the batch-size study on the digits set.
    "smallcnn": Model(10.3e3, 0.16, 8.0),
    "resnet18": Model(11.7e6, 1.82, 2.0),
    "resnet50": Model(25.6e6, 4.11, 1.0),
    "resnet101": Model(44.5e6, 7.83, 0.5),
}
