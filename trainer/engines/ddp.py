"""torch.distributed engine: DistributedDataParallel with no_sync() for accumulation.

Rank, world and rendezvous come from trainer.environment (torchrun, Open MPI,
Slurm or PMI variables); Gloo on CPU, NCCL on GPU.  A single process with no
launcher runs without a process group.  The gradient noise scale (trainer/gns.py)
needs nothing from DDP: its parameter tensor hooks run before DDP's reducer hooks
(no_sync or not), and backward returns with the reduced gradient in p.grad.
"""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainer.engines.base import Engine
from trainer.environment import detect


class DDPEngine(Engine):
    name = "ddp"

    def __init__(self, use_cuda: bool, timeout_s: int = 1800, deterministic: bool = False):
        self.env = detect(os.environ)
        self.device = torch.device("cuda", self.env.local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        self.distributed = self.env.world_size > 1
        # NCCL's watchdog aborts a rank whose collective hangs beyond the same timeout.
        os.environ.setdefault("TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC", str(int(timeout_s)))
        if self.distributed:
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo",
                init_method=f"tcp://{self.env.master_addr}:{self.env.master_port}",
                rank=self.env.rank, world_size=self.env.world_size,
                timeout=datetime.timedelta(seconds=timeout_s), device_id=self.device if use_cuda else None)

    def wrap(self, model, optimizer, batches_per_allreduce, fp16_allreduce):
        if not self.distributed:
            return model, optimizer
        # forward_sync_buffers=False: like Horovod, BatchNorm statistics stay per rank
        # (rank 0's are checkpointed and broadcast before validation), so the only
        # collective per optimizer step is the gradient reduction.
        ddp = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                      forward_sync_buffers=False, gradient_as_bucket_view=True)
        if fp16_allreduce:
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
            ddp.register_comm_hook(dist.group.WORLD, default_hooks.fp16_compress_hook)
        return ddp, optimizer

    def accumulate(self, model, last):
        if self.distributed and not last:
            return model.no_sync()
        return contextlib.nullcontext()

    def broadcast_state(self, model, optimizer):
        # Nothing to do: DistributedDataParallel broadcasts rank 0's parameters and
        # buffers when it wraps the model, and every rank loads the optimizer state
        # from the same checkpoint file.
        return None

    def broadcast_buffers(self, model):
        if self.distributed:
            for b in model.buffers():
                dist.broadcast(b, src=0)

    def allreduce_sum(self, tensor):
        out = tensor.detach().clone().to(self.device)
        if self.distributed:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.cpu()

    def broadcast_int(self, value):
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def shutdown(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
