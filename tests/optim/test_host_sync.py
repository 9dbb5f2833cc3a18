"""step() must never wait for the device: no .item(), no bool()/float() of a
tensor.  A TorchDispatchMode sees every aten call made from Python and counts
the ones that copy a device value to the host."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from trainer.optim import Lamb, Lars, create_optimizer

SYNC_OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default,
            torch.ops.aten.item.default}


class HostSyncCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNC_OPS:
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def _loss(model, digits):
    x, y = digits
    return nn.functional.cross_entropy(model(x[:32]), y[:32])


def _count_step(model, opt, digits) -> list[str]:
    opt.zero_grad()
    _loss(model, digits).backward()
    with HostSyncCounter() as counter:
        opt.step()
    return counter.syncs


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "single"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("mode", ["nus", "tf"])
def test_lars_step_has_no_host_sync(digits, make_model, mode, momentum, foreach):
    model = make_model(0)
    opt = create_optimizer("lars", model, lr=0.1, momentum=momentum, weight_decay=1e-4, epsilon=1e-5,
                           bn_bias_separately=True, mode=mode, foreach=foreach)
    for _ in range(2):  # the first step creates the buffers, the second uses them
        assert _count_step(model, opt, digits) == []


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "single"])
def test_lamb_step_has_no_host_sync(digits, make_model, foreach):
    model = make_model(0)
    opt = create_optimizer("lamb", model, lr=0.01, weight_decay=1e-2, bn_bias_separately=True, foreach=foreach)
    for _ in range(2):
        assert _count_step(model, opt, digits) == []


@pytest.mark.parametrize("cls", [Lars, Lamb])
def test_tensor_lr_has_no_host_sync(cls):
    p = torch.randn(4, 4)
    p.grad = torch.randn(4, 4)
    opt = cls([{"params": [p]}, {"params": [], "lars": False}], lr=torch.tensor(0.01))
    with HostSyncCounter() as counter:
        opt.step()
    assert counter.syncs == []


def test_the_counter_sees_a_reference_style_item_call(digits, make_model):
    """Control: the reference's per-parameter `trust.item()` is counted, so a
    zero above means zero."""
    model = make_model(0)
    _loss(model, digits).backward()
    with HostSyncCounter() as counter, torch.no_grad():
        for p in model.parameters():
            trust = 1e-3 * p.norm() / p.grad.norm()
            p.add_(p.grad, alpha=-0.1 * trust.item())
            if p.grad.norm() > 0:  # bool() of a tensor
                pass
    assert len(counter.syncs) == 2 * len(list(model.parameters()))
