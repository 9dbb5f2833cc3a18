"""The engine interface the training loop talks to (one per process)."""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Callable

import torch

from trainer.environment import JobEnvironment


class Engine(ABC):
    """Rank bookkeeping, model/optimizer wrapping and the few collectives the loop needs."""

    name: str
    env: JobEnvironment
    device: torch.device

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.rank == 0

    @abstractmethod
    def wrap(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches_per_allreduce: int,
             fp16_allreduce: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Make gradients reduce (average over ranks) once per k backward passes."""

    def accumulate(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Context for one micro-batch's forward+backward; `last` is the reducing one.

        Engines reduce from hooks that run after a gradient is accumulated into p.grad, so
        tensor hooks on the parameters (trainer/gns.py) still see each micro-batch's own
        gradient first."""
        return contextlib.nullcontext()

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                       reduced: Callable[[], None] | None = None) -> None:
        """Step after the k-th backward pass.  ``reduced()`` (the gradient noise scale's hook,
        trainer/gns.py) runs once the reduced gradient is in p.grad and before anything changes
        it (unscaling, clipping, weight decay); for DDP the reduction ended with backward."""
        if reduced is not None:
            reduced()
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()

    @abstractmethod
    def broadcast_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Make every rank start from rank 0's parameters (and optimizer state when it has any)."""

    @abstractmethod
    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""

    @abstractmethod
    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a small tensor over ranks (metrics, the stop flag); returns a new tensor."""

    @abstractmethod
    def broadcast_int(self, value: int) -> int:
        """Rank 0's value on every rank."""

    @abstractmethod
    def barrier(self) -> None:
        ...

    def shutdown(self) -> None:
        pass
