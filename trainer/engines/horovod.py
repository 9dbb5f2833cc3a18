"""Horovod engine: DistributedOptimizer with backward_passes_per_step = k.

Launched by horovodrun (Gloo), mpirun (Open MPI) or srun --mpi=pmix; Horovod
reads its own rank variables.  Gradients are averaged (op=Average) once per k
backward passes, optionally compressed to fp16.  The allreduce overwrites p.grad in
place: the gradient noise scale (trainer/gns.py) reads each micro-batch's gradient in
parameter tensor hooks, which run before Horovod's post-accumulation hooks, and the
reduced gradient between synchronize() and the step.
"""
from __future__ import annotations

import inspect
import os

import torch
import horovod.torch as hvd

from trainer.engines.base import Engine
from trainer.environment import JobEnvironment


class HorovodEngine(Engine):
    name = "horovod"

    def __init__(self, use_cuda: bool, timeout_s: int = 1800, deterministic: bool = False):
        if deterministic:
            # Tensor fusion packs whatever gradients are ready in a cycle into one buffer: where an
            # element lands in the ring's chunks, and so the order its ranks' values are added in,
            # then depends on timing.  One allreduce per tensor keeps the sums bit-identical.
            os.environ.setdefault("HOROVOD_FUSION_THRESHOLD", "0")
        # A peer that died or hangs: Gloo contexts (rendezvous and collectives) give up after
        # timeout_s, and Horovod shuts down once a rank stalled that long (unless set already).
        for name, value in (("HOROVOD_GLOO_TIMEOUT_SECONDS", timeout_s),
                            ("HOROVOD_STALL_CHECK_TIME_SECONDS", max(10, min(60, timeout_s // 2))),
                            ("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", timeout_s)):
            os.environ.setdefault(name, str(int(value)))
        hvd.init()
        self.env = JobEnvironment("horovod", hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), "", 0)
        self.device = torch.device("cuda", hvd.local_rank()) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        self._calls = 0

    def wrap(self, model, optimizer, batches_per_allreduce, fp16_allreduce):
        _rebuildable_from_params(optimizer)
        compression = hvd.Compression.fp16 if fp16_allreduce else hvd.Compression.none
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                             compression=compression, op=hvd.Average,
                                             backward_passes_per_step=batches_per_allreduce)
        return model, optimizer

    def optimizer_step(self, optimizer, scaler, reduced=None):
        if scaler is None and reduced is None:
            optimizer.step()
            return
        # The allreduce (in place into p.grad, launched by Horovod's hooks during the k-th
        # backward pass) must finish before the gradient noise scale reads the reduced
        # gradient and before the scaler unscales and checks for inf; then step without
        # synchronizing again (what step() would do itself).
        optimizer.synchronize()
        if reduced is not None:
            reduced()
        if scaler is None:
            with optimizer.skip_synchronize():
                optimizer.step()
            return
        scaler.unscale_(optimizer)
        with optimizer.skip_synchronize():
            scaler.step(optimizer)
        scaler.update()

    def broadcast_state(self, model, optimizer):
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        # A fresh optimizer has no state; broadcast_optimizer_state would create it
        # with a zero-gradient step (which applies weight decay), so only broadcast
        # state that exists (after a resume).
        if len(optimizer.state_dict()["state"]) > 0:
            hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def broadcast_buffers(self, model):
        hvd.broadcast_parameters(dict(model.named_buffers()), root_rank=0)

    def _name(self, what: str) -> str:
        self._calls += 1
        return f"trainer.{what}.{self._calls}"

    def allreduce_sum(self, tensor):
        return hvd.allreduce(tensor.detach().clone(), op=hvd.Sum, name=self._name("sum")).cpu()

    def broadcast_int(self, value):
        t = hvd.broadcast(torch.tensor([value], dtype=torch.int64), root_rank=0, name=self._name("bcast"))
        return int(t.item())

    def barrier(self):
        hvd.barrier()

    def shutdown(self):
        hvd.shutdown()


def _rebuildable_from_params(optimizer: torch.optim.Optimizer) -> None:
    """Let Horovod re-run the optimizer's __init__ with the parameter groups alone.

    hvd.DistributedOptimizer subclasses the optimizer's class and calls
    `__init__(param_groups)`; torch's optimizers have a default lr, Lars and Lamb
    require it.  Give the class a constructor that fills every required argument
    from the optimizer's own defaults (each group still carries its own values).
    """
    cls = type(optimizer)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {name: optimizer.defaults[name] for name in params if name in optimizer.defaults}

    def __init__(self, param_groups):
        cls.__init__(self, param_groups, **kwargs)

    optimizer.__class__ = type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})
