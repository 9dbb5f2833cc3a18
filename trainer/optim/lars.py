"""LARS: layer-wise adaptive rate scaling.

Paper: You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks",
https://arxiv.org/abs/1708.03888.  Two update rules, chosen with ``mode``:

``mode="nus"`` reproduces the PyTorch LARS of the NUS LARS-ImageNet reference
(https://www.comp.nus.edu.sg/~youy/lars_optimizer.py and its PyTorch port),
with which the published ResNet-50 table (77% top-1 at batch 512 to 32K) was
trained::

    trust = clamp(eeta*||w|| / (||g|| + wd*||w|| + eps), 0, 50)  if ||w|| > 0 and ||g|| > 0 else 1
    d     = clamp(g + wd*w, -10, 10)          # the clamp applies to every group
    buf   = d  (first step),  then  buf = momentum*buf + d
    w     = w - lr*trust*buf                  # the trust ratio scales the whole buffer

``mode="tf"`` reproduces the TensorFlow TPU / MLPerf reference
(tensorflow/tpu models/official/efficientnet/lars_optimizer.py)::

    trust = eeta*||w|| / (||g|| + wd*||w|| + eps)  if ||w|| > 0 and ||g|| > 0 else 1
    v     = momentum*v + lr*trust*(g + wd*w)  # v starts at 0
    w     = w - v

A param group with ``lars=False`` (bn/bias, see param_groups.py) gets plain
momentum SGD: trust = 1 and, as in torch.optim.SGD, its own weight_decay (the
reference builds such groups with weight_decay=0, so both agree there).

step() never synchronises with the host (no .item(), no bool() of a tensor):
norms stay on the device and the ratio is picked with torch.where.  The
multi-tensor path (foreach, the default) groups tensors by device and dtype.
Half-precision params keep half-precision buffers, as torch.optim.SGD does;
their norms and trust ratios are computed in fp32.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT, required

from ._common import (CheckedOptimizer, buckets, check_dense, check_flag, check_hyperparameter, compute_dtype,
                      foreach_norms, norm, trust_ratio, use_foreach)

__all__ = ["Lars", "lars", "MODES", "group_trust_ratios"]

MODES = ("nus", "tf")
# nus mode constants from the reference implementation.
NUS_GRAD_CLIP = 10.0
NUS_MAX_TRUST = 50.0


def group_trust_ratios(group: dict, w_norms: Tensor, g_norms: Tensor) -> Tensor:
    """The trust ratios a step of this param group applies, elementwise over the norms of
    its parameters (``w_norms``) and of their gradients (``g_norms``); 1 where the group has
    ``lars=False``.  The same formula as the step's (tests/gns/test_lars_noise.py checks them
    against the updates); trainer.gns weights the LARS noise scale with them."""
    if not group["lars"]:
        return torch.ones_like(g_norms)
    return trust_ratio(w_norms, g_norms, coeff=group["eeta"], weight_decay=group["weight_decay"],
                       epsilon=group["epsilon"], max_ratio=NUS_MAX_TRUST if group["mode"] == "nus" else None)


def check_lars_group(group: dict) -> None:
    """ValueError naming the first bad hyperparameter of a param group."""
    if group["lr"] is not required:  # see the class docstring
        check_hyperparameter("Lars", "lr", group["lr"], low=0.0)
    check_hyperparameter("Lars", "momentum", group["momentum"], low=0.0)
    check_hyperparameter("Lars", "eeta", group["eeta"], low=0.0, low_inclusive=False)
    check_hyperparameter("Lars", "weight_decay", group["weight_decay"], low=0.0)
    check_hyperparameter("Lars", "epsilon", group["epsilon"], low=0.0)
    check_flag("Lars", "mode", group["mode"], MODES)
    check_flag("Lars", "lars", group["lars"], (True, False))
    check_flag("Lars", "foreach", group["foreach"], (None, True, False))


class Lars(CheckedOptimizer):
    """LARS (see the module docstring for the exact update of each mode).

    Args:
        params: parameters or dicts defining parameter groups; a group may set
            ``lars=False`` to skip the trust ratio (plain momentum SGD).
        lr: learning rate; may be left out when every param group sets its
            own (Horovod's DistributedOptimizer rebuilds the optimizer as
            cls(param_groups), without the other arguments).
        momentum: momentum factor (default 0).
        eeta: trust coefficient (default 1e-3).
        weight_decay: L2 penalty added to the gradient (default 0).
        epsilon: added to the trust-ratio denominator (default 0).
        mode: "nus" (NUS PyTorch reference) or "tf" (TensorFlow/MLPerf).
        foreach: True = multi-tensor path, False = per-parameter loop,
            None (default) = multi-tensor wherever the params allow it.
    """

    check_group = staticmethod(check_lars_group)
    newer_keys = {"mode": "nus", "lars": True, "eeta": 1e-3, "epsilon": 0.0, "foreach": None}

    def __init__(self, params: ParamsT, lr: float | Tensor = required, momentum: float = 0.0, eeta: float = 1e-3,
                 weight_decay: float = 0.0, epsilon: float = 0.0, mode: str = "nus", *,
                 foreach: bool | None = None) -> None:
        defaults = {"lr": lr, "momentum": momentum, "eeta": eeta, "weight_decay": weight_decay,
                    "epsilon": epsilon, "mode": mode, "lars": True, "foreach": foreach}
        check_lars_group(defaults)
        super().__init__(params, defaults)

    def _init_group(self, group_index: int, group: dict, params: list[Tensor], grads: list[Tensor],
                    momentum_buffers: list[Tensor | None]) -> None:
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            check_dense("Lars", group_index, i, p.grad)
            params.append(p)
            grads.append(p.grad)
            if group["momentum"] != 0:
                momentum_buffers.append(self.state[p].get("momentum_buffer"))

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
            momentum_buffers: list[Tensor | None] = []
            self._init_group(index, group, params, grads, momentum_buffers)
            lars(params, grads, momentum_buffers, foreach=group["foreach"], lr=group["lr"],
                 momentum=group["momentum"], eeta=group["eeta"], weight_decay=group["weight_decay"],
                 epsilon=group["epsilon"], mode=group["mode"], adapt=group["lars"])
            if group["momentum"] != 0:
                for p, buf in zip(params, momentum_buffers, strict=True):
                    self.state[p]["momentum_buffer"] = buf
        return loss


def lars(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
         foreach: bool | None = None, *, lr: float | Tensor, momentum: float, eeta: float,
         weight_decay: float, epsilon: float, mode: str, adapt: bool) -> None:
    """Functional LARS: updates `params` in place and fills `momentum_buffers`
    (entries None on the first step) with the new buffers."""
    if not params:
        return
    func = _multi_tensor_lars if use_foreach(foreach, params) else _single_tensor_lars
    func(params, grads, momentum_buffers, lr=lr, momentum=momentum, eeta=eeta,
         weight_decay=weight_decay, epsilon=epsilon, mode=mode, adapt=adapt)


def _single_tensor_lars(params: list[Tensor], grads: list[Tensor],
                        momentum_buffers: list[Tensor | None], *, lr: float | Tensor, momentum: float,
                        eeta: float, weight_decay: float, epsilon: float, mode: str,
                        adapt: bool) -> None:
    nus = mode == "nus"
    for i, p in enumerate(params):
        grad = grads[i]
        step: float | Tensor = lr  # lr*trust
        if adapt:
            step = trust_ratio(norm(p), norm(grad), coeff=eeta, weight_decay=weight_decay, epsilon=epsilon,
                               max_ratio=NUS_MAX_TRUST if nus else None) * lr
        if nus:
            # d is a new tensor: p.grad is never written to.
            if weight_decay != 0:
                d = grad.add(p, alpha=weight_decay).clamp_(-NUS_GRAD_CLIP, NUS_GRAD_CLIP)
            else:
                d = grad.clamp(-NUS_GRAD_CLIP, NUS_GRAD_CLIP)
            if momentum != 0:
                buf = momentum_buffers[i]
                if buf is not None:
                    d.add_(buf, alpha=momentum)  # d = momentum*buf + d becomes the buffer
                momentum_buffers[i] = d
            _add_scaled_(p, d, step, -1)
        elif momentum != 0:
            # v = momentum*v + step*g + step*wd*w, all in place on v (which starts at 0).
            buf = momentum_buffers[i]
            buf = torch.zeros_like(p) if buf is None else buf
            buf.mul_(momentum)
            _add_scaled_(buf, grad, step, 1)
            if weight_decay != 0:
                _add_scaled_(buf, p, step * weight_decay, 1)
            momentum_buffers[i] = buf
            p.sub_(buf)
        else:
            # w = w*(1 - step*wd) - step*g: in place, no temporary.
            if weight_decay != 0:
                p.mul_(1 - step * weight_decay)
            _add_scaled_(p, grad, step, -1)


def _add_scaled_(target: Tensor, source: Tensor, scale: float | Tensor, sign: int) -> None:
    """target += sign*scale*source, scale a float or a 0-dim tensor (no host sync)."""
    if isinstance(scale, Tensor):
        target.addcmul_(source, scale, value=sign)
    else:
        target.add_(source, alpha=sign * scale)


def _multi_tensor_lars(params: list[Tensor], grads: list[Tensor],
                       momentum_buffers: list[Tensor | None], *, lr: float | Tensor, momentum: float,
                       eeta: float, weight_decay: float, epsilon: float, mode: str,
                       adapt: bool) -> None:
    """The same arithmetic as _single_tensor_lars, one foreach call per stage."""
    nus = mode == "nus"
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, momentum_buffers], with_indices=True)  # type: ignore[list-item]
    for (device, dtype), ((all_params, all_grads, all_bufs), all_indices) in grouped.items():
        for run in buckets(cast(list[Tensor], all_params)):
            _multi_tensor_lars_run(cast(list[Tensor], all_params[run]), cast(list[Tensor], all_grads[run]),
                                   cast(list[Tensor | None], all_bufs[run]), all_indices[run], momentum_buffers,
                                   device=device, dtype=dtype, lr=lr, momentum=momentum, eeta=eeta,
                                   weight_decay=weight_decay, epsilon=epsilon, nus=nus, adapt=adapt)


def _multi_tensor_lars_run(device_params: list[Tensor], device_grads: list[Tensor],
                           device_bufs: list[Tensor | None], indices: list[int],
                           momentum_buffers: list[Tensor | None], *, device: torch.device, dtype: torch.dtype,
                           lr: float | Tensor, momentum: float, eeta: float, weight_decay: float, epsilon: float,
                           nus: bool, adapt: bool) -> None:
    """One run of same-device, same-dtype tensors; new buffers go to
    momentum_buffers[indices[j]]."""
    # Per-parameter step sizes lr*trust as one vector (a few vector ops for
    # all params), used through 0-dim views of it.
    steps: Tensor | None = None
    if adapt:
        steps = trust_ratio(foreach_norms(device_params), foreach_norms(device_grads), coeff=eeta,
                            weight_decay=weight_decay, epsilon=epsilon,
                            max_ratio=NUS_MAX_TRUST if nus else None) * lr
    elif isinstance(lr, Tensor):
        steps = torch.ones(len(device_params), device=device, dtype=compute_dtype(dtype)) * lr
    step = lr if steps is None else list(steps.unbind(0))

    if nus:
        if weight_decay != 0:
            d = torch._foreach_add(device_grads, device_params, alpha=weight_decay)
            _clamp_(d)
        else:
            d = _clamp_(device_grads, copy=True)
        if momentum != 0:
            _momentum_into(d, device_bufs, momentum)
            new_bufs = d
        _foreach_add_scaled_(device_params, d, step, -1)
    elif momentum != 0:
        new_bufs = [torch.zeros_like(p) if b is None else b for p, b in zip(device_params, device_bufs)]
        torch._foreach_mul_(new_bufs, momentum)
        _foreach_add_scaled_(new_bufs, device_grads, step, 1)
        if weight_decay != 0:
            decay = lr * weight_decay if steps is None else list((steps * weight_decay).unbind(0))
            _foreach_add_scaled_(new_bufs, device_params, decay, 1)
        torch._foreach_sub_(device_params, new_bufs)
    else:
        if weight_decay != 0:
            shrink = 1 - lr * weight_decay if steps is None else list((1 - steps * weight_decay).unbind(0))
            torch._foreach_mul_(device_params, shrink)
        _foreach_add_scaled_(device_params, device_grads, step, -1)

    if momentum != 0:
        for j, index in enumerate(indices):
            momentum_buffers[index] = new_bufs[j]


def _foreach_add_scaled_(targets: list[Tensor], sources: list[Tensor], scale: float | list[Tensor],
                         sign: int) -> None:
    if isinstance(scale, list):
        torch._foreach_addcmul_(targets, sources, scale, value=sign)
    else:
        torch._foreach_add_(targets, sources, alpha=sign * scale)


def _momentum_into(fresh: list[Tensor], bufs: list[Tensor | None], momentum: float) -> None:
    """fresh[i] += momentum*bufs[i] in place (bufs[i] None: first step, fresh[i]
    is the buffer as is).  The caller then keeps `fresh` as the new buffers: one
    fused pass instead of buf.mul_(m).add_(d), and no copy."""
    present = [i for i, b in enumerate(bufs) if b is not None]
    if len(present) == len(bufs):
        torch._foreach_add_(fresh, cast(list[Tensor], bufs), alpha=momentum)
    elif present:
        torch._foreach_add_([fresh[i] for i in present], [cast(Tensor, bufs[i]) for i in present],
                            alpha=momentum)


def _clamp_(tensors: list[Tensor], *, copy: bool = False) -> list[Tensor]:
    """Clamp to [-NUS_GRAD_CLIP, NUS_GRAD_CLIP] in place, or into new tensors when `copy`.

    There is no fused foreach clamp.  On CPU the foreach kernels are a loop over
    the tensors anyway, so one clamp per tensor (min and max in one pass) beats
    two foreach passes; on accelerators two foreach launches beat one per tensor.
    """
    if tensors[0].device.type == "cpu":
        if copy:
            return [t.clamp(-NUS_GRAD_CLIP, NUS_GRAD_CLIP) for t in tensors]
        for t in tensors:
            t.clamp_(-NUS_GRAD_CLIP, NUS_GRAD_CLIP)
        return tensors
    if copy:
        tensors = torch._foreach_clamp_min(tensors, -NUS_GRAD_CLIP)
    else:
        torch._foreach_clamp_min_(tensors, -NUS_GRAD_CLIP)
    torch._foreach_clamp_max_(tensors, NUS_GRAD_CLIP)
    return tensors
