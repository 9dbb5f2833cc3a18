"""Helpers shared by Lars and Lamb: argument checks, foreach choice, norms.

Nothing here synchronises with the host: norms stay on the device and trust
ratios are chosen with torch.where, so step() never waits for the GPU.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Callable, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

# Devices whose foreach ops we use by default.  Unlike torch.optim (which only
# defaults to foreach on accelerators) CPU is included: on CPU the foreach ops
# are a C++ loop over tensors, which saves the Python per-parameter overhead
# (bench/bench_optim.py measures both paths).
_FOREACH_DEVICES = ("cpu", "cuda", "xpu", "mtia", torch._C._get_privateuse1_backend_name())


def check_hyperparameter(owner: str, name: str, value, *, low: float, low_inclusive: bool = True,
                         high: float | None = None, high_inclusive: bool = False) -> None:
    """Raise ValueError naming `name` unless `value` is a real number in range."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{owner}: invalid {name}: a Tensor {name} must have one element, "
                             f"got shape {tuple(value.shape)}")
        number = float(value.detach().cpu())  # construction time only, never inside step()
    elif isinstance(value, Real) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected a number")
    ok = math.isfinite(number) and (number >= low if low_inclusive else number > low)
    if ok and high is not None:
        ok = number <= high if high_inclusive else number < high
    if not ok:
        low_text = f"{'>=' if low_inclusive else '>'} {low:g}"
        high_text = "" if high is None else f" and {'<=' if high_inclusive else '<'} {high:g}"
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected a finite number {low_text}{high_text}")


def check_flag(owner: str, name: str, value, allowed: tuple) -> None:
    # `type(...) is` keeps 1 from passing for True and 0 for False.
    if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected one of {', '.join(map(repr, allowed))}")


def check_dense(owner: str, group_index: int, param_index: int, grad: Tensor) -> None:
    if grad.is_sparse:
        raise RuntimeError(
            f"{owner} does not support sparse gradients (param_groups[{group_index}], parameter "
            f"{param_index}, shape {tuple(grad.shape)}); use dense gradients, "
            "e.g. nn.Embedding(..., sparse=False)")


def use_foreach(foreach: bool | None, params: list[Tensor]) -> bool:
    """foreach=None picks the multi-tensor path when every param is a plain tensor
    on a device with foreach kernels; an explicit True/False is respected."""
    if foreach is not None:
        return foreach
    if torch.jit.is_scripting():
        return False
    return all(type(p) in (Tensor, torch.nn.Parameter) and p.device.type in _FOREACH_DEVICES
               for p in params)


# On CPU the foreach ops are a loop over tensors, each op a pass over memory.
# Running the whole update on runs of params of about this size keeps the
# temporaries and the operands of the next op in the CPU caches (measured with
# bench/bench_optim.py-style loops: about 20% less time per step on ResNet-50).
CPU_BUCKET_BYTES = 4 << 20


def buckets(tensors: list[Tensor]) -> list[slice]:
    """The list in one piece on accelerators; on CPU, consecutive runs of at
    most CPU_BUCKET_BYTES per list (a larger tensor is a run by itself)."""
    if not tensors or tensors[0].device.type != "cpu":
        return [slice(0, len(tensors))]
    runs, start, size = [], 0, 0
    for i, t in enumerate(tensors):
        nbytes = t.numel() * t.element_size()
        if i > start and size + nbytes > CPU_BUCKET_BYTES:
            runs.append(slice(start, i))
            start, size = i, 0
        size += nbytes
    runs.append(slice(start, len(tensors)))
    return runs


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms and trust ratios of half-precision params are computed in fp32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def norm(t: Tensor) -> Tensor:
    """L2 norm as a 0-dim tensor on t's device, in compute_dtype(t.dtype)."""
    return torch.linalg.vector_norm(t, 2, dtype=compute_dtype(t.dtype))


def foreach_norms(tensors: list[Tensor]) -> Tensor:
    """L2 norms of a same-dtype list as one 1-D tensor (one foreach call, one stack)."""
    dtype = compute_dtype(tensors[0].dtype)
    norms = torch._foreach_norm(tensors, 2, dtype=None if dtype == tensors[0].dtype else dtype)
    return torch.stack(norms)


def trust_ratio(w_norm: Tensor, u_norm: Tensor, *, coeff: float, weight_decay: float,
                epsilon: float, max_ratio: float | None) -> Tensor:
    """coeff*||w|| / (||u|| + wd*||w|| + eps) where both norms are > 0, else 1.

    Works elementwise, so the same code serves one parameter (0-dim norms) and a
    stacked vector of norms on the foreach path.  torch.where keeps it on the
    device; the unused branch may hold inf/nan, which where() discards.
    """
    ratio = coeff * w_norm / (u_norm + weight_decay * w_norm + epsilon)
    ratio = torch.where((w_norm > 0) & (u_norm > 0), ratio, torch.ones_like(ratio))
    if max_ratio is not None:
        ratio = ratio.clamp(0.0, max_ratio)
    return ratio


class CheckedOptimizer(Optimizer):
    """An Optimizer whose every param group (defaults merged in) is checked by
    `check_group`, and whose old pickles get the keys of `newer_keys`."""

    check_group: ClassVar[Callable[[dict], None]]
    newer_keys: ClassVar[dict] = {}

    def add_param_group(self, param_group: dict) -> None:
        # Groups may override any default, so the merged group is what counts; it is
        # checked before torch appends it (as torch validates first), so a rejected
        # group never stays behind in param_groups.
        if isinstance(param_group, dict):
            type(self).check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.newer_keys.items():
                group.setdefault(key, value)
