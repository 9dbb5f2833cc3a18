"""PolynomialWarmup: values at the key steps, rounding of fractional steps,
and an exact resume from a state_dict (the reference restarted its warmup)."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from trainer.optim import Lars, PolynomialWarmup, create_optimizer_lars

BASE, END, W, D, POWER = 2.0, 0.01, 10, 30, 2.0


def _lrs(scheduler, optimizer, steps):
    """group lr seen by each of `steps` optimizer steps."""
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_values_at_key_steps():
    opt = Lars([{"params": [torch.zeros(1)]}, {"params": [torch.zeros(1)], "lr": 0.5}], lr=BASE)
    sched = PolynomialWarmup(opt, decay_steps=D, warmup_steps=W, end_lr=END, power=POWER)
    lrs = _lrs(sched, opt, D + 5)
    expected = {
        0: 0.0,                                   # warmup starts at 0
        W // 2: BASE / 2,                         # mid-warmup
        W: BASE,                                  # end of warmup
        (W + D) // 2: END + (BASE - END) * 0.5 ** POWER,   # mid-decay
        D: END, D + 4: END,                       # end, and after the end
    }
    for step, lr in expected.items():
        assert lrs[step][0] == pytest.approx(lr, rel=1e-12, abs=1e-15), step
    # Every group follows its own base lr.
    assert lrs[W][1] == pytest.approx(0.5) and lrs[W // 2][1] == pytest.approx(0.25)
    # Monotonic up, then monotonic down.
    first = [lr[0] for lr in lrs]
    assert first[:W + 1] == sorted(first[:W + 1]) and first[W:] == sorted(first[W:], reverse=True)
    assert sched.get_last_lr()[0] == END


def test_no_warmup_starts_at_base_lr():
    opt = Lars([torch.zeros(1)], lr=BASE)
    sched = PolynomialWarmup(opt, decay_steps=4, end_lr=0.0, power=1.0)
    assert [lr[0] for lr in _lrs(sched, opt, 5)] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])


@pytest.mark.parametrize(("warmup", "steps"), [(0.3125 * 7, 2), (2.5, 3), (0.2, 1), (0, 0), (4.0, 4)])
def test_fractional_warmup_steps_are_rounded(warmup, steps):
    """warmup_epochs * steps_per_epoch is often fractional: round half up, and
    a positive warmup is at least one step."""
    opt = Lars([torch.zeros(1)], lr=BASE)
    assert PolynomialWarmup(opt, decay_steps=20.4, warmup_steps=warmup).warmup_steps == steps


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _train(model, opt, sched, digits, steps, first):
    x_all, y_all = digits
    lrs = []
    for i in range(first, first + steps):
        x, y = x_all[i * 32:(i + 1) * 32], y_all[i * 32:(i + 1) * 32]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("load_optimizer_first", [False, True],
                         ids=["scheduler-built-first", "optimizer-loaded-first"])
def test_resume_continues_the_schedule_exactly(digits, make_model, load_optimizer_first):
    """2N steps straight == N steps, checkpoint, fresh objects, N steps: the
    same lr sequence (N ends inside the warmup) and the same params."""
    n = 6

    def make(model):
        opt = create_optimizer_lars(model, lr=1.0, momentum=0.9, weight_decay=1e-4, bn_bias_separately=True,
                                    eeta=0.02)
        return opt, (lambda: PolynomialWarmup(opt, decay_steps=2 * n + 3, warmup_steps=n + 2.4))

    straight = make_model(0)
    opt, make_sched = make(straight)
    lrs_straight = _train(straight, opt, make_sched(), digits, 2 * n, 0)

    first = make_model(0)
    opt, make_sched = make(first)
    sched = make_sched()
    lrs = _train(first, opt, sched, digits, n, 0)
    saved = _roundtrip({"model": first.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict()})

    resumed = make_model(1)
    resumed.load_state_dict(saved["model"])
    opt, make_sched = make(resumed)
    if load_optimizer_first:
        opt.load_state_dict(saved["optimizer"])
        sched = make_sched()
    else:
        sched = make_sched()
        opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    lrs += _train(resumed, opt, sched, digits, n, n)

    assert lrs == lrs_straight
    assert 0 < lrs[n] < 1.0, "the checkpoint must fall inside the warmup for this test to mean anything"
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
