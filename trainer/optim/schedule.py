"""Step-based linear warmup + polynomial decay (the LARS ImageNet schedule).

For scheduler position t (t optimizer steps done; group["lr"] is the rate of
step t+1), with W = warmup_steps and D = decay_steps::

    t <  W:        lr = base_lr * t / W                                   (from 0, as the TF/MLPerf reference)
    W <= t <= D:   lr = end_lr + (base_lr - end_lr) * (1 - (t - W)/(D - W)) ** power
    t >  D:        lr = end_lr

The warmup ramp starts at 0, so the very first step only fills the momentum
buffers; the ramp reaches base_lr at t = W, where the decay takes over, so the
curve is continuous.  Unlike the reference (which restarted the warmup when a
run resumed) the schedule is a closed form of `last_epoch`, which state_dict()
saves, so a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ._common import check_hyperparameter

__all__ = ["PolynomialWarmup", "polynomial_warmup_lr", "round_steps"]


def round_steps(name: str, value: float) -> int:
    """Steps given as (fractional epochs * steps per epoch): round half up, and a
    positive value never rounds down to 0 steps."""
    check_hyperparameter("PolynomialWarmup", name, value, low=0.0)
    steps = int(math.floor(float(value) + 0.5))
    return max(steps, 1) if value > 0 else 0


def polynomial_warmup_lr(t: int, base_lr: float, *, warmup_steps: int, decay_steps: int,
                         end_lr: float, power: float) -> float:
    """The learning rate at scheduler position t (pure function of the formula above)."""
    if t < warmup_steps:
        return base_lr * t / warmup_steps
    if t >= decay_steps:
        return end_lr
    remaining = 1.0 - (t - warmup_steps) / (decay_steps - warmup_steps)
    return end_lr + (base_lr - end_lr) * remaining ** power


class PolynomialWarmup(LRScheduler):
    """Linear warmup over `warmup_steps`, then polynomial decay to `end_lr` at
    `decay_steps` (both counted in optimizer steps; floats are rounded with
    round_steps).  Call scheduler.step() after every optimizer.step()."""

    def __init__(self, optimizer: Optimizer, decay_steps: float, warmup_steps: float = 0,
                 end_lr: float = 0.0, power: float = 2.0, last_epoch: int = -1) -> None:
        self.decay_steps = round_steps("decay_steps", decay_steps)
        self.warmup_steps = round_steps("warmup_steps", warmup_steps)
        if self.decay_steps < 1:
            raise ValueError(f"PolynomialWarmup: invalid decay_steps={decay_steps!r}: expected >= 1 step")
        if self.warmup_steps > self.decay_steps:
            raise ValueError(f"PolynomialWarmup: invalid warmup_steps={warmup_steps!r}: expected at most "
                             f"decay_steps={decay_steps!r}")
        check_hyperparameter("PolynomialWarmup", "end_lr", end_lr, low=0.0)
        check_hyperparameter("PolynomialWarmup", "power", power, low=0.0)
        self.end_lr = float(end_lr)
        self.power = float(power)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, t: int) -> list[float]:
        return [polynomial_warmup_lr(t, float(base), warmup_steps=self.warmup_steps,
                                     decay_steps=self.decay_steps, end_lr=self.end_lr, power=self.power)
                for base in self.base_lrs]

    def get_lr(self) -> list[float]:
        return self._lr_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float]:
        return self._lr_at(self.last_epoch)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the position and re-apply its rate to the optimizer, so the
        result does not depend on whether the optimizer state was loaded before
        or after this scheduler was built."""
        super().load_state_dict(state_dict)
        values = self._lr_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = values
