"""LAMB: layer-wise adaptive moments for large-batch training.

Paper: You et al., "Large Batch Optimization for Deep Learning: Training BERT
in 76 minutes", https://arxiv.org/abs/1904.00962 (Algorithm 2, with bias
correction).  Per parameter, at step t::

    m = beta1*m + (1-beta1)*g            v = beta2*v + (1-beta2)*g*g
    r = (m / (1-beta1**t)) / (sqrt(v / (1-beta2**t)) + eps) + wd*w
    trust = ||w|| / ||r||  if ||w|| > 0 and ||r|| > 0 else 1
    w = w - lr*trust*r

A param group with ``lars=False`` (bn/bias, see param_groups.py) skips the
trust ratio (trust = 1), i.e. plain AdamW-style steps with its own weight decay.
Like torch.optim.Adam the moments are kept in the param dtype; norms and the
trust ratio of half-precision params are computed in fp32.  The step count is a
host integer, so the bias corrections cost no device synchronisation.
"""
from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT, required

from ._common import (CheckedOptimizer, buckets, check_dense, check_flag, check_hyperparameter, foreach_norms,
                      norm, trust_ratio, use_foreach)

__all__ = ["Lamb", "lamb"]


def check_lamb_group(group: dict) -> None:
    """ValueError naming the first bad hyperparameter of a param group."""
    if group["lr"] is not required:  # see the class docstring
        check_hyperparameter("Lamb", "lr", group["lr"], low=0.0)
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Lamb: invalid betas={betas!r}: expected a pair (beta1, beta2)")
    check_hyperparameter("Lamb", "betas[0]", betas[0], low=0.0, high=1.0)
    check_hyperparameter("Lamb", "betas[1]", betas[1], low=0.0, high=1.0)
    check_hyperparameter("Lamb", "eps", group["eps"], low=0.0, low_inclusive=False)
    check_hyperparameter("Lamb", "weight_decay", group["weight_decay"], low=0.0)
    check_flag("Lamb", "lars", group["lars"], (True, False))
    check_flag("Lamb", "foreach", group["foreach"], (None, True, False))


class Lamb(CheckedOptimizer):
    """LAMB (see the module docstring for the exact update).

    Args:
        params: parameters or dicts defining parameter groups; a group may set
            ``lars=False`` to skip the trust ratio.
        lr: learning rate; may be left out when every param group sets its
            own (Horovod's DistributedOptimizer rebuilds the optimizer as
            cls(param_groups), without the other arguments).
        betas: decay rates of the first and second moments (default (0.9, 0.999)).
        eps: added to the second-moment root (default 1e-6, must be > 0).
        weight_decay: decoupled weight decay inside the update (default 0).
        foreach: True = multi-tensor path, False = per-parameter loop,
            None (default) = multi-tensor wherever the params allow it.
    """

    check_group = staticmethod(check_lamb_group)
    newer_keys = {"lars": True, "foreach": None}

    def __init__(self, params: ParamsT, lr: float | Tensor = required, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, *, foreach: bool | None = None) -> None:
        defaults = {"lr": lr, "betas": tuple(betas) if isinstance(betas, list) else betas, "eps": eps,
                    "weight_decay": weight_decay, "lars": True, "foreach": foreach}
        check_lamb_group(defaults)
        super().__init__(params, defaults)

    def _init_group(self, group_index: int, group: dict, params: list[Tensor], grads: list[Tensor],
                    exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], steps: list[int]) -> None:
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            check_dense("Lamb", group_index, i, p.grad)
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = int(state["step"]) + 1
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; `closure` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            steps: list[int] = []
            self._init_group(index, group, params, grads, exp_avgs, exp_avg_sqs, steps)
            beta1, beta2 = group["betas"]
            lamb(params, grads, exp_avgs, exp_avg_sqs, steps, foreach=group["foreach"], lr=group["lr"],
                 beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                 adapt=group["lars"])
        return loss


def lamb(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
         steps: list[int], foreach: bool | None = None, *, lr: float | Tensor, beta1: float,
         beta2: float, eps: float, weight_decay: float, adapt: bool) -> None:
    """Functional LAMB: updates params and moments in place; steps[i] is the
    (already incremented) step count of params[i]."""
    if not params:
        return
    func = _multi_tensor_lamb if use_foreach(foreach, params) else _single_tensor_lamb
    func(params, grads, exp_avgs, exp_avg_sqs, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
         weight_decay=weight_decay, adapt=adapt)


def _single_tensor_lamb(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                        exp_avg_sqs: list[Tensor], steps: list[int], *, lr: float | Tensor,
                        beta1: float, beta2: float, eps: float, weight_decay: float,
                        adapt: bool) -> None:
    for i, p in enumerate(params):
        grad, exp_avg, exp_avg_sq = grads[i], exp_avgs[i], exp_avg_sqs[i]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = exp_avg_sq.sqrt().div_(math.sqrt(1 - beta2 ** steps[i])).add_(eps)
        update = torch.div(exp_avg, update).mul_(1 / (1 - beta1 ** steps[i]))
        if weight_decay != 0:
            update.add_(p, alpha=weight_decay)
        if adapt:
            ratio = trust_ratio(norm(p), norm(update), coeff=1.0, weight_decay=0.0, epsilon=0.0,
                                max_ratio=None)
            update.mul_(ratio * lr)
            p.sub_(update)
        elif isinstance(lr, Tensor):
            p.sub_(update.mul_(lr))
        else:
            p.add_(update, alpha=-lr)


def _multi_tensor_lamb(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                       exp_avg_sqs: list[Tensor], steps: list[int], *, lr: float | Tensor,
                       beta1: float, beta2: float, eps: float, weight_decay: float,
                       adapt: bool) -> None:
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, exp_avgs, exp_avg_sqs], with_indices=True)  # type: ignore[list-item]
    for (all_params, all_grads, all_exp_avgs, all_exp_avg_sqs), all_indices in grouped.values():
        for run in buckets(cast(list[Tensor], all_params)):
            _multi_tensor_lamb_run(
                cast(list[Tensor], all_params[run]), cast(list[Tensor], all_grads[run]),
                cast(list[Tensor], all_exp_avgs[run]), cast(list[Tensor], all_exp_avg_sqs[run]),
                [steps[i] for i in all_indices[run]], lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                weight_decay=weight_decay, adapt=adapt)


def _multi_tensor_lamb_run(device_params: list[Tensor], device_grads: list[Tensor], device_exp_avgs: list[Tensor],
                           device_exp_avg_sqs: list[Tensor], device_steps: list[int], *, lr: float | Tensor,
                           beta1: float, beta2: float, eps: float, weight_decay: float, adapt: bool) -> None:
    """One run of same-device, same-dtype tensors."""
    torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
    torch._foreach_mul_(device_exp_avg_sqs, beta2)
    torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, value=1 - beta2)
    update = torch._foreach_sqrt(device_exp_avg_sqs)
    torch._foreach_div_(update, [math.sqrt(1 - beta2 ** s) for s in device_steps])
    torch._foreach_add_(update, eps)
    update = torch._foreach_div(device_exp_avgs, update)
    torch._foreach_mul_(update, [1 / (1 - beta1 ** s) for s in device_steps])
    if weight_decay != 0:
        torch._foreach_add_(update, device_params, alpha=weight_decay)
    if adapt:
        ratios = trust_ratio(foreach_norms(device_params), foreach_norms(update), coeff=1.0,
                             weight_decay=0.0, epsilon=0.0, max_ratio=None)
        torch._foreach_mul_(update, list((ratios * lr).unbind(0)))
        torch._foreach_sub_(device_params, update)
    elif isinstance(lr, Tensor):
        torch._foreach_mul_(update, lr)
        torch._foreach_sub_(device_params, update)
    else:
        torch._foreach_add_(device_params, update, alpha=-lr)
