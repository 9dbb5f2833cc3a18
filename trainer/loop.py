"""One optimizer step and one validation pass: the hot path, no I/O.

With k = batches_per_allreduce the step runs k micro-batches, divides each loss
by k (so the accumulated gradient is the mean over k x batch samples), lets the
engine reduce gradients once (on the last micro-batch) and steps the optimizer.
Statistics stay on the device as tensors so the step never waits for the GPU;
the caller reduces them across ranks only when it logs.  With a gradient noise scale
estimator in the context (trainer/gns.py) the step also records the micro-batch and
reduced gradient norms, on the device as well.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from trainer.engines.base import Engine
from trainer.gns import GradientNoiseScale


@dataclass
class StepContext:
    """Everything train_step needs besides the batches (built once per run)."""
    model: torch.nn.Module  # possibly DDP-wrapped
    optimizer: torch.optim.Optimizer  # possibly Horovod-wrapped
    engine: Engine
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    device: torch.device
    scaler: torch.amp.GradScaler | None = None
    amp_dtype: torch.dtype | None = None  # None: no autocast
    channels_last: bool = False
    gns: GradientNoiseScale | None = None  # None: the noise scale is not measured

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return (images.to(self.device, non_blocking=True, memory_format=fmt),
                labels.to(self.device, non_blocking=True))


def _logits(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def train_step(ctx: StepContext, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
               step: int | None = None) -> torch.Tensor:
    """One optimizer step over len(micro_batches) = k micro-batches; ``step``: its number (0-based),
    which tells the noise scale estimator whether to measure it (None: measure).

    Returns a device tensor [sum of per-sample loss, correct top-1, samples].
    """
    k = len(micro_batches)
    stats = torch.zeros(3, device=ctx.device)
    ctx.model.train()
    if ctx.gns is not None:
        ctx.gns.begin_step(ctx.scaler, step)
    for i, (images, labels) in enumerate(micro_batches):
        images, labels = ctx.to_device(images, labels)
        with ctx.engine.accumulate(ctx.model, last=i == k - 1):
            with ctx.autocast():
                logits = _logits(ctx.model(images))
                loss = ctx.criterion(logits, labels)
            scaled = loss / k
            (ctx.scaler.scale(scaled) if ctx.scaler is not None else scaled).backward()
        with torch.no_grad():
            n = labels.shape[0]
            stats[0] += loss.detach().float() * n
            stats[1] += (logits.argmax(1) == labels).sum()
            stats[2] += n
    if ctx.gns is None:
        ctx.engine.optimizer_step(ctx.optimizer, ctx.scaler)
    else:
        ctx.engine.optimizer_step(ctx.optimizer, ctx.scaler, reduced=ctx.gns.after_reduce)
    ctx.optimizer.zero_grad()  # set_to_none (torch's default); Horovod's wrapper takes no arguments
    return stats


@torch.no_grad()
def evaluate(ctx: StepContext, model: torch.nn.Module, loader,
             on_batch: Callable[[], None] | None = None) -> tuple[float, float, float]:
    """(loss, top-1, top-5) over the whole validation set, averaged across ranks; ``on_batch``
    after each batch (the rank's heartbeat: validation is progress too)."""
    model.eval()
    sums = torch.zeros(4, device=ctx.device)
    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    for images, labels in loader:
        images, labels = ctx.to_device(images, labels)
        with ctx.autocast():
            logits = _logits(model(images)).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == labels[:, None]
        sums[0] += criterion(logits, labels)
        sums[1] += hit[:, 0].sum()
        sums[2] += hit.any(1).sum()
        sums[3] += labels.shape[0]
        if on_batch is not None:
            on_batch()
    loss, top1, top5, n = ctx.engine.allreduce_sum(sums).tolist()
    n = max(n, 1.0)
    return loss / n, top1 / n, top5 / n
