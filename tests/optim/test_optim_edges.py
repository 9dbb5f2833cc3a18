"""Edge cases users hit: zero weights or grads, params without grad, empty
groups, half precision, sparse grads, bad hyperparameters, GradScaler,
gradient accumulation and state_dict round trips."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from trainer.optim import Lamb, Lars, PolynomialWarmup, create_optimizer, create_optimizer_lars

BOTH_PATHS = pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "single"])
MODES = pytest.mark.parametrize("mode", ["nus", "tf"])


def _leaf(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


@BOTH_PATHS
@MODES
def test_zero_weights_use_trust_ratio_one(mode, foreach):
    p = torch.zeros(4, 3, dtype=torch.float64)
    g = torch.linspace(-2, 3, 12, dtype=torch.float64).reshape(4, 3)
    p.grad = g.clone()
    Lars([p], lr=0.1, eeta=1e-3, weight_decay=0.01, mode=mode, foreach=foreach).step()
    # ||w|| = 0: trust 1, and wd*w = 0, so the step is plain lr*g.
    torch.testing.assert_close(p, -0.1 * g, rtol=0, atol=1e-15)


@BOTH_PATHS
@MODES
def test_zero_grads_use_trust_ratio_one(mode, foreach):
    w = torch.linspace(-1, 1, 12, dtype=torch.float64)
    p = w.clone()
    p.grad = torch.zeros_like(p)
    Lars([p], lr=0.1, eeta=1e-3, weight_decay=0.01, mode=mode, foreach=foreach).step()
    torch.testing.assert_close(p, w - 0.1 * 0.01 * w, rtol=0, atol=1e-15)
    assert p.grad.abs().sum() == 0, "the optimizer must not write into p.grad"


@BOTH_PATHS
@MODES
def test_params_without_grad_are_skipped_and_grads_untouched(mode, foreach):
    a, b = torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    a.grad = torch.full_like(a, 0.5)
    grad_before = a.grad.clone()
    opt = Lars([a, b], lr=0.1, momentum=0.9, weight_decay=1e-4, mode=mode, foreach=foreach)
    opt.step()
    assert torch.equal(b, torch.ones(2, dtype=torch.float64))
    assert b not in opt.state and "momentum_buffer" in opt.state[a]
    assert torch.equal(a.grad, grad_before)
    assert not torch.equal(a, torch.ones(3, dtype=torch.float64))


@BOTH_PATHS
def test_empty_groups_and_groups_without_grads(foreach):
    p = torch.ones(3)
    p.grad = torch.ones(3)
    idle = torch.ones(2)  # never gets a grad
    for opt in (Lars([{"params": []}, {"params": [idle]}, {"params": [p], "lars": False}], lr=0.1,
                     momentum=0.9, foreach=foreach),
                Lamb([{"params": []}, {"params": [idle]}, {"params": [p]}], lr=0.1, foreach=foreach)):
        before = p.clone()
        opt.step()
        opt.step()
        assert not torch.equal(p, before)
        assert torch.equal(idle, torch.ones(2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@BOTH_PATHS
@MODES
def test_half_precision_params_follow_fp32(dtype, mode, foreach):
    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 8), (8,), (4, 4, 3, 3)]
    w32 = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) * 0.1 for s in shapes] for _ in range(5)]
    runs = {}
    for run_dtype in (torch.float32, dtype):
        params = [w.to(run_dtype, copy=True) for w in w32]
        opt = Lars([{"params": params[:2]}, {"params": params[2:], "lars": False}], lr=1.0, momentum=0.9,
                   eeta=0.02, weight_decay=1e-3, mode=mode, foreach=foreach)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.to(run_dtype)
            opt.step()
        assert all(opt.state[p]["momentum_buffer"].dtype == run_dtype for p in params)
        runs[run_dtype] = params
    for low, high in zip(runs[dtype], runs[torch.float32]):
        assert low.dtype == dtype
        # Half-precision rounding only: the params move by 0.2 to 2 here.
        atol = 1e-2 if dtype == torch.float16 else 5e-2
        torch.testing.assert_close(low.float(), high, rtol=0, atol=atol)


@BOTH_PATHS
@MODES
def test_fp16_norms_are_computed_in_fp32(mode, foreach):
    """||w|| = 300*sqrt(1e5) ~ 94868 overflows fp16 (max 65504); the trust
    ratio must still be eeta*||w||/||g|| = 1e-3*300/1 = 0.3."""
    p = torch.full((100_000,), 300.0, dtype=torch.float16)
    p.grad = torch.ones_like(p)
    Lars([p], lr=1.0, eeta=1e-3, mode=mode, foreach=foreach).step()
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.float(), torch.full((100_000,), 300.0 - 0.3), rtol=0, atol=0.25)


@pytest.mark.parametrize("make", [
    lambda ps: Lars(ps, lr=0.1, momentum=0.9, foreach=True),
    lambda ps: Lars(ps, lr=0.1, momentum=0.9, foreach=False),
    lambda ps: Lamb(ps, lr=0.1, foreach=True),
    lambda ps: Lamb(ps, lr=0.1, foreach=False),
], ids=["lars-foreach", "lars-single", "lamb-foreach", "lamb-single"])
def test_sparse_gradients_raise_a_clear_error(make):
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2, 3])).sum().backward()
    opt = make(emb.parameters())
    with pytest.raises(RuntimeError, match=r"does not support sparse gradients.*sparse=False"):
        opt.step()


LARS_BAD = [
    ({"lr": -0.1}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": "0.1"}, "lr"),
    ({"momentum": -0.9}, "momentum"), ({"eeta": 0.0}, "eeta"), ({"eeta": -1e-3}, "eeta"),
    ({"weight_decay": -1e-4}, "weight_decay"), ({"weight_decay": math.inf}, "weight_decay"),
    ({"epsilon": -1e-5}, "epsilon"), ({"mode": "torch"}, "mode"), ({"foreach": "yes"}, "foreach"),
]


@pytest.mark.parametrize(("kwargs", "name"), LARS_BAD, ids=[f"{n}={v!r}" for (k, n) in LARS_BAD for v in k.values()])
def test_lars_invalid_hyperparameters_name_the_argument(kwargs, name):
    args = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=rf"Lars: invalid {name}\b"):
        Lars([torch.zeros(2)], **args)


@pytest.mark.parametrize(("group", "name"), [({"lr": -1.0}, "lr"), ({"lars": "no"}, "lars"),
                                             ({"mode": "NUS"}, "mode"), ({"momentum": -1}, "momentum")])
def test_lars_invalid_group_override_names_the_argument(group, name):
    with pytest.raises(ValueError, match=rf"Lars: invalid {name}\b"):
        Lars([{"params": [torch.zeros(2)], **group}], lr=0.1)


@pytest.mark.parametrize("make", [lambda p: Lars([p], lr=0.1), lambda p: Lamb([p], lr=0.1)],
                         ids=["lars", "lamb"])
def test_a_rejected_param_group_is_not_added(make):
    # torch.optim validates a group before appending it; a rejected group must not
    # stay behind in param_groups (a caller that catches the error keeps a sane optimizer).
    opt = make(torch.zeros(2))
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [torch.zeros(3)], "lr": -1.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [torch.zeros(3)], "lr": 0.5})
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]


LAMB_BAD = [({"lr": -1.0}, "lr"), ({"betas": (0.9, 1.0)}, r"betas\[1\]"), ({"betas": (-0.1, 0.9)}, r"betas\[0\]"),
            ({"betas": 0.9}, "betas"), ({"eps": 0.0}, "eps"), ({"weight_decay": -0.01}, "weight_decay"),
            ({"foreach": 1}, "foreach")]


@pytest.mark.parametrize(("kwargs", "name"), LAMB_BAD, ids=[str(k) for k, _ in LAMB_BAD])
def test_lamb_invalid_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"Lamb: invalid {name}"):
        Lamb([torch.zeros(2)], **{"lr": 0.1, **kwargs})


SCHEDULE_BAD = [({"decay_steps": 0}, "decay_steps"), ({"decay_steps": -5}, "decay_steps"),
                ({"warmup_steps": -1}, "warmup_steps"), ({"warmup_steps": 20}, "warmup_steps"),
                ({"end_lr": -0.1}, "end_lr"), ({"power": -1.0}, "power"), ({"power": "2"}, "power")]


@pytest.mark.parametrize(("kwargs", "name"), SCHEDULE_BAD, ids=[str(k) for k, _ in SCHEDULE_BAD])
def test_schedule_invalid_arguments_name_the_argument(kwargs, name):
    opt = Lars([torch.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match=rf"PolynomialWarmup: invalid {name}\b"):
        PolynomialWarmup(opt, **{"decay_steps": 10, **kwargs})


def test_unknown_optimizer_name_is_a_value_error():
    with pytest.raises(ValueError, match=r"invalid name='adam'.*lamb, lars, sgd"):
        create_optimizer("adam", nn.Linear(2, 2), lr=0.1)


def _batch(digits, start=0, size=64):
    x, y = digits
    return x[start:start + size], y[start:start + size]


@MODES
def test_grad_scaler_skips_inf_steps_and_unscales_the_rest(digits, make_model, mode):
    """scaler.unscale_ then scaler.step: a step with an inf grad changes
    nothing (params, buffers); the next one equals an unscaled step."""
    x, y = _batch(digits)
    scaled, plain = make_model(0), make_model(0)
    opt = create_optimizer_lars(scaled, lr=0.5, momentum=0.9, weight_decay=5e-4, bn_bias_separately=True,
                                eeta=0.02, mode=mode)
    ref = create_optimizer_lars(plain, lr=0.5, momentum=0.9, weight_decay=5e-4, bn_bias_separately=True,
                                eeta=0.02, mode=mode)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)

    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(scaled(x), y)).backward()
    scaled.fc.weight.grad[0, 0] = math.inf
    before = [p.detach().clone() for p in scaled.parameters()]
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, scaled.parameters()))
    assert len(opt.state) == 0
    assert scaler.get_scale() == 2.0 ** 11

    plain.load_state_dict(scaled.state_dict())  # same BatchNorm running stats too
    for model, optimizer, use_scaler in ((scaled, opt, True), (plain, ref, False)):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if use_scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
    for a, b in zip(scaled.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_gradient_accumulation_equals_one_big_batch(digits, make_model, name):
    """Two half batches with loss/2 accumulated into .grad give the step of one
    full batch (BatchNorm in eval mode, so batch statistics do not differ)."""
    x, y = _batch(digits, size=64)
    results = []
    for chunks in (1, 2):
        model = make_model(0).eval()
        opt = create_optimizer(name, model, lr=0.1, momentum=0.9, weight_decay=1e-4, bn_bias_separately=True)
        for _ in range(3):
            opt.zero_grad()
            for xs, ys in zip(x.chunk(chunks), y.chunk(chunks)):
                (nn.functional.cross_entropy(model(xs), ys) / chunks).backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def _train(model, opt, digits, steps, first_batch):
    for i in range(steps):
        x, y = _batch(digits, start=(first_batch + i) * 32, size=32)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _roundtrip(obj: dict) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(("name", "kw"), [("lars", {"mode": "nus"}), ("lars", {"mode": "tf"}), ("lamb", {})],
                         ids=["lars-nus", "lars-tf", "lamb"])
def test_state_dict_round_trip_resumes_exactly(digits, make_model, name, kw):
    def make(model):
        return create_optimizer(name, model, lr=0.2, momentum=0.9, weight_decay=1e-4, bn_bias_separately=True, **kw)

    straight = make_model(0)
    _train(straight, make(straight), digits, 8, 0)

    first = make_model(0)
    opt = make(first)
    _train(first, opt, digits, 4, 0)
    saved = _roundtrip({"model": first.state_dict(), "optimizer": opt.state_dict()})
    resumed = make_model(1)  # different init: everything must come from the checkpoint
    opt2 = make(resumed)
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["optimizer"])
    _train(resumed, opt2, digits, 4, 4)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [Lars, Lamb])
def test_lr_may_come_from_the_groups_only(cls):
    """As hvd.DistributedOptimizer rebuilds optimizers: cls(param_groups)."""
    p = torch.ones(3)
    p.grad = torch.ones(3)
    opt = cls([{"params": [p], "lr": 0.1}])
    opt.step()
    assert not torch.equal(p, torch.ones(3))
    with pytest.raises(ValueError, match=r"\blr\b"):
        cls([torch.ones(3)])
