"""Param groups (bn/bias separation) and the optimizer registry the trainer uses.

bn_bias_separately=True puts normalisation-layer parameters and biases into a
second group with weight_decay=0 and lars=False (no trust ratio), as the LARS
ImageNet reference recommends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from trainer.config import OPTIMIZER_NAMES

from .lamb import Lamb
from .lars import Lars

__all__ = ["bn_bias_param_groups", "create_optimizer", "create_optimizer_lamb",
           "create_optimizer_lars", "OPTIMIZERS", "NORM_LAYERS"]

# _NormBase covers BatchNorm*, SyncBatchNorm, InstanceNorm* and their lazy forms.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def bn_bias_param_groups(model: nn.Module, weight_decay: float,
                         bn_bias_separately: bool = True) -> list[dict]:
    """[{params, weight_decay}, {params (norm layers and biases), weight_decay: 0,
    lars: False}], keeping only non-empty groups.  Frozen parameters
    (requires_grad=False) are left out; a parameter shared by several modules is
    listed once."""
    seen: set[int] = set()
    regular: list[nn.Parameter] = []
    exempt: list[nn.Parameter] = []
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if bn_bias_separately and (is_norm or name == "bias"):
                exempt.append(p)
            else:
                regular.append(p)
    groups = [{"params": regular, "weight_decay": weight_decay},
              {"params": exempt, "weight_decay": 0.0, "lars": False}]
    return [g for g in groups if g["params"]]


def create_optimizer_lars(model: nn.Module, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                          bn_bias_separately: bool = False, epsilon: float = 0.0, **kw) -> Lars:
    """Lars over `model` (same signature as the reference); **kw goes to Lars
    (eeta, mode, foreach)."""
    groups = bn_bias_param_groups(model, weight_decay, bn_bias_separately)
    return Lars(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, epsilon=epsilon, **kw)


def create_optimizer_lamb(model: nn.Module, lr: float, weight_decay: float = 0.0,
                          bn_bias_separately: bool = False, epsilon: float = 1e-6, **kw) -> Lamb:
    """Lamb over `model`; **kw goes to Lamb (betas, foreach)."""
    groups = bn_bias_param_groups(model, weight_decay, bn_bias_separately)
    return Lamb(groups, lr=lr, weight_decay=weight_decay, eps=epsilon, **kw)


def _create_sgd(model: nn.Module, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                bn_bias_separately: bool = False, **kw) -> torch.optim.SGD:
    groups = bn_bias_param_groups(model, weight_decay, bn_bias_separately)
    for g in groups:
        g.pop("lars", None)  # SGD has no trust ratio to skip
    kw.setdefault("foreach", True)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **kw)


def _lamb(model, lr, momentum, weight_decay, bn_bias_separately, epsilon, **kw):
    # LAMB's first-moment decay is its beta1; `momentum` is not a LAMB parameter.
    eps = {} if epsilon is None else {"epsilon": epsilon}
    return create_optimizer_lamb(model, lr, weight_decay, bn_bias_separately, **eps, **kw)


def _lars(model, lr, momentum, weight_decay, bn_bias_separately, epsilon, **kw):
    return create_optimizer_lars(model, lr, momentum, weight_decay, bn_bias_separately,
                                 0.0 if epsilon is None else epsilon, **kw)


def _sgd(model, lr, momentum, weight_decay, bn_bias_separately, epsilon, **kw):
    # epsilon is a LARS/LAMB denominator term; SGD has none, so it is not used.
    return _create_sgd(model, lr, momentum, weight_decay, bn_bias_separately, **kw)


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    factory: Callable[..., torch.optim.Optimizer]
    description: str


# How each of trainer.config.OPTIMIZER_NAMES is built (a name without a builder fails at import).
_BUILDERS = {
    "lars": (_lars, "LARS (trainer.optim.Lars; --lars-mode nus|tf)"),
    "lamb": (_lamb, "LAMB with bias correction (trainer.optim.Lamb)"),
    "sgd": (_sgd, "torch.optim.SGD with momentum, foreach"),
}
OPTIMIZERS: dict[str, OptimizerInfo] = {name: OptimizerInfo(name, *_BUILDERS[name]) for name in OPTIMIZER_NAMES}


def create_optimizer(name: str, model: nn.Module, *, lr: float, momentum: float = 0.9,
                     weight_decay: float = 0.0, epsilon: float | None = None,
                     bn_bias_separately: bool = False, **kw) -> torch.optim.Optimizer:
    """Build optimizer `name` (one of trainer.config.OPTIMIZER_NAMES) over `model`.

    epsilon=None means the optimizer's default (0 for LARS, 1e-6 for LAMB);
    SGD ignores epsilon and LAMB ignores momentum (it uses betas).  **kw goes to
    the optimizer class (e.g. mode/eeta for LARS, betas for LAMB, foreach).
    """
    info = OPTIMIZERS.get(name)
    if info is None:
        raise ValueError(f"create_optimizer: invalid name={name!r}: expected one of "
                         f"{', '.join(sorted(OPTIMIZERS))}")
    return info.factory(model, lr, momentum, weight_decay, bn_bias_separately, epsilon, **kw)
