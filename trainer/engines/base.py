"""The engine interface the training loop talks to (one per process)."""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

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
        """Context for one micro-batch's forward+backward; `last` is the reducing one."""
        return contextlib.nullcontext()

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
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
