"""Shared material for the optimizer tests: real data, a tiny CNN, and a
recorder that runs an optimizer on the CNN and keeps, per step, the params
before, the gradients and the params after (for the NumPy references)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn


class TinyCNN(nn.Module):
    """Conv with bias, BatchNorm, conv without bias, BatchNorm, linear with bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's bundled 8x8 digits (1797 real images), scaled to [0, 1]."""
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(data.target, dtype=torch.long)


@pytest.fixture(scope="session")
def bn_bias_names() -> set[str]:
    """TinyCNN names that bn/bias separation must exempt, derived independently
    of the code under test: every bias and every BatchNorm parameter."""
    return {name for name, _ in TinyCNN().named_parameters()
            if name.endswith(".bias") or name.split(".")[0].startswith("bn")}


@pytest.fixture
def make_model() -> Callable[..., TinyCNN]:
    def make(seed: int = 0, dtype: torch.dtype = torch.float32) -> TinyCNN:
        torch.manual_seed(seed)
        return TinyCNN().to(dtype)
    return make


@dataclass
class Step:
    before: list[np.ndarray]
    grads: list[np.ndarray]
    after: list[np.ndarray]
    lr: float


@dataclass
class Trajectory:
    names: list[str]
    steps: list[Step]
    losses: list[float]

    def worst_diff(self, step: int, params: list[np.ndarray]) -> float:
        """Max abs difference between `params` and the params after `step`."""
        return max(float(np.max(np.abs(a - b))) for a, b in zip(params, self.steps[step].after, strict=True))

    def moved(self) -> float:
        """How far training moved the params (guards against vacuous comparisons)."""
        first, last = self.steps[0].before, self.steps[-1].after
        return max(float(np.max(np.abs(a - b))) for a, b in zip(first, last, strict=True))


@pytest.fixture
def record(digits, make_model) -> Callable[..., Trajectory]:
    """record(make_optimizer, steps=25, loss_scale=1.0, scheduler=None): train
    the tiny CNN on consecutive digits batches and keep every step."""
    x_all, y_all = digits

    def run(make_optimizer, steps: int = 25, loss_scale: float = 1.0, batch: int = 64,
            make_scheduler=None) -> Trajectory:
        model = make_model(0)
        optimizer = make_optimizer(model)
        scheduler = make_scheduler(optimizer) if make_scheduler else None
        names = [n for n, _ in model.named_parameters()]
        params = list(model.parameters())
        out = Trajectory(names, [], [])
        for i in range(steps):
            start = (i * batch) % (len(x_all) - batch)
            x, y = x_all[start:start + batch], y_all[start:start + batch]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            (loss * loss_scale).backward()
            before = [p.detach().double().numpy().copy() for p in params]
            grads = [p.grad.double().numpy().copy() for p in params]
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            out.steps.append(Step(before, grads, [p.detach().double().numpy().copy() for p in params], lr))
            out.losses.append(loss.item())
        return out

    return run



@pytest.fixture(autouse=True)
def _one_thread():
    # The tensors here are tiny: extra intra-op threads only fight over the
    # shared cores.  Restored after each test, so other test areas keep theirs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
