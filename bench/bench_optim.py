"""Per-step time of trainer.optim.Lars against torch SGD and a reference-style loop.

The tensors have the shapes of torchvision's ResNet-50 parameters (161 tensors,
25.6M values; no weights are downloaded), fp32 on CPU, with fixed random
gradients.  The optimizers run round-robin, one step each per round, so that
noise from other processes hits them alike; the figures are medians.  Besides
wall-clock time the process CPU time per step is printed: on a machine shared
with other jobs it is the steadier figure (with --threads 1 it is the work done).

    .venv/bin/python bench/bench_optim.py [--threads N] [--rounds 30]

Targets on CPU: LARS/SGD <= 1.3 and loop/LARS >= 1 (LARS no slower than the loop).
The LARS/SGD ratio is taken against SGD with the same weight decay (both add
wd*w to the gradient); the ratio against SGD without weight decay is printed too.
On a machine shared with other jobs, --threads 1 gives the steadiest figures.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torchvision

from trainer.optim import Lars

from machine import describe as describe_machine  # bench/machine.py (scripts run from bench/)

LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
EETA = 1e-3


class ReferenceLoop:
    """The reference repository's Lars.step, as written there: one parameter at
    a time, with .item() on the trust ratio (a host sync per parameter)."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float, weight_decay: float,
                 eeta: float) -> None:
        self.params, self.lr, self.momentum, self.wd, self.eeta = params, lr, momentum, weight_decay, eeta
        self.bufs: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            w_norm = torch.norm(p)
            g_norm = torch.norm(p.grad)
            trust = torch.where((w_norm > 0) & (g_norm > 0),
                                self.eeta * w_norm / (g_norm + self.wd * w_norm),
                                torch.ones_like(w_norm))
            trust.clamp_(0.0, 50.0)
            scaled_lr = self.lr * trust.item()
            d = p.grad.add(p, alpha=self.wd)
            d = torch.clamp(d, -10.0, 10.0)
            buf = self.bufs.get(i)
            if buf is None:
                buf = self.bufs[i] = torch.clone(d).detach()
            else:
                buf.mul_(self.momentum).add_(d)
            p.add_(buf, alpha=-scaled_lr)


def resnet50_tensors(seed: int) -> list[torch.Tensor]:
    """Fresh leaf tensors with ResNet-50's parameter shapes and random grads."""
    shapes = [p.shape for p in torchvision.models.resnet50(weights=None).parameters()]
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=gen) * 0.05
        p.grad = torch.randn(shape, generator=gen) * 1e-3
        params.append(p)
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=40, help="timed steps per optimizer (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer first")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    candidates: dict[str, Callable[[], None]] = {}
    common = {"lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY}
    candidates["Lars nus (foreach)"] = Lars(resnet50_tensors(0), eeta=EETA, mode="nus", foreach=True, **common).step
    candidates["Lars tf (foreach)"] = Lars(resnet50_tensors(0), eeta=EETA, mode="tf", foreach=True, **common).step
    candidates["Lars nus (single-tensor)"] = Lars(resnet50_tensors(0), eeta=EETA, mode="nus", foreach=False,
                                                  **common).step
    candidates["SGD foreach, same wd"] = torch.optim.SGD(resnet50_tensors(0), foreach=True, **common).step
    candidates["SGD foreach, wd=0"] = torch.optim.SGD(resnet50_tensors(0), lr=LR, momentum=MOMENTUM,
                                                      foreach=True).step
    candidates["reference loop (.item())"] = ReferenceLoop(resnet50_tensors(0), eeta=EETA, **common).step

    wall: dict[str, list[float]] = {name: [] for name in candidates}
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.warmup):
        for step in candidates.values():
            step()
    for _ in range(args.rounds):
        for name, step in candidates.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)

    n_values = sum(p.numel() for p in torchvision.models.resnet50(weights=None).parameters())
    print(f"machine: {describe_machine()}")
    print(f"ResNet-50 shapes: 161 tensors, {n_values / 1e6:.1f}M fp32 values; lr={LR} momentum={MOMENTUM} "
          f"weight_decay={WEIGHT_DECAY} eeta={EETA}; median of {args.rounds} steps after {args.warmup} warm-up")
    print(f"  {'':28s} {'wall ms/step':>12s} {'(quartiles)':>17s} {'CPU ms/step':>12s}")
    for name in candidates:
        q = statistics.quantiles(wall[name], n=4)
        print(f"  {name:28s} {q[1] * 1e3:12.2f} {f'({q[0] * 1e3:.1f}..{q[2] * 1e3:.1f})':>17s} "
              f"{statistics.median(cpu[name]) * 1e3:12.2f}")
    for label, times in (("wall", wall), ("CPU", cpu)):
        median = {name: statistics.median(t) for name, t in times.items()}
        sgd, sgd0 = median["SGD foreach, same wd"], median["SGD foreach, wd=0"]
        loop = median["reference loop (.item())"]
        for mode in ("nus", "tf"):
            lars = median[f"Lars {mode} (foreach)"]
            print(f"{label:4s} LARS {mode}/SGD = {lars / sgd:.2f} (target <= 1.3; SGD with the same wd), "
                  f"vs SGD wd=0 {lars / sgd0:.2f}; loop/LARS {mode} = {loop / lars:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
