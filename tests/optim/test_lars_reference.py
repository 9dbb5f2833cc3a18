"""Lars against references, step by step on a tiny CNN trained on real digits.

The NumPy reference below is written from the formulas of issue 3 (not from
trainer/optim), runs in float64 on the gradients the optimizer saw, and keeps
its own params and buffers; every step must agree within 1e-6.  tf mode at a
constant lr is also checked against timm.optim.Lars from PyPI.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import timm.optim

from trainer.optim import Lars, PolynomialWarmup, create_optimizer_lars

TOL = 1e-6
STEPS = 25
HYPER = {"eeta": 0.02, "weight_decay": 5e-4, "epsilon": 1e-5}


def numpy_lars(traj, *, mode: str, momentum: float, eeta: float, weight_decay: float, epsilon: float,
               exempt: set[str], lr: float | None = None) -> tuple[float, dict[str, int]]:
    """Replay `traj` through the LARS formulas; return the worst per-step
    difference and how often the nus clamps fired.  lr=None: the lr each step
    was taken with (a schedule)."""
    w = [a.copy() for a in traj.steps[0].before]
    buf: list[np.ndarray | None] = [None] * len(w)
    hits = {"grad_clip": 0, "trust_clip": 0}
    worst = 0.0
    for t, step in enumerate(traj.steps):
        lr_t = step.lr if lr is None else lr
        for i, g in enumerate(step.grads):
            is_lars = traj.names[i] not in exempt
            wd = weight_decay if is_lars else 0.0
            w_norm, g_norm = np.linalg.norm(w[i]), np.linalg.norm(g)
            trust = 1.0
            if is_lars and w_norm > 0 and g_norm > 0:
                trust = eeta * w_norm / (g_norm + wd * w_norm + epsilon)
                if mode == "nus" and trust > 50.0:
                    trust, hits["trust_clip"] = 50.0, hits["trust_clip"] + 1
            d = g + wd * w[i]
            if mode == "nus":
                hits["grad_clip"] += int(np.any(np.abs(d) > 10.0))
                d = np.clip(d, -10.0, 10.0)
                if momentum != 0:
                    buf[i] = d if buf[i] is None else momentum * buf[i] + d
                    d = buf[i]
                w[i] = w[i] - lr_t * trust * d
            else:
                v = np.zeros_like(w[i]) if buf[i] is None else buf[i]
                buf[i] = momentum * v + lr_t * trust * d
                w[i] = w[i] - buf[i]
        worst = max(worst, traj.worst_diff(t, w))
    return worst, hits


def _lars_factory(mode, momentum, bn_bias_separately, foreach=None, lr=0.2, **hyper):
    hyper = {**HYPER, **hyper}
    return lambda model: create_optimizer_lars(
        model, lr=lr, momentum=momentum, weight_decay=hyper["weight_decay"],
        bn_bias_separately=bn_bias_separately, epsilon=hyper["epsilon"], eeta=hyper["eeta"], mode=mode,
        foreach=foreach)


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "single"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("bn_bias_separately", [False, True], ids=["one-group", "bn-bias-separately"])
@pytest.mark.parametrize("mode", ["nus", "tf"])
def test_lars_matches_numpy_reference(record, bn_bias_names, mode, bn_bias_separately, momentum, foreach):
    traj = record(_lars_factory(mode, momentum, bn_bias_separately, foreach), steps=STEPS)
    exempt = bn_bias_names if bn_bias_separately else set()
    worst, _ = numpy_lars(traj, mode=mode, momentum=momentum, lr=0.2, exempt=exempt, **HYPER)
    assert worst <= TOL
    assert traj.moved() > 0.02, "the params hardly moved: the comparison would prove nothing"
    assert traj.losses[-1] < traj.losses[0]


@pytest.mark.parametrize("mode", ["nus", "tf"])
def test_lars_with_schedule_matches_numpy_reference(record, bn_bias_names, mode):
    """The lr a scheduler sets each step is the lr of that step (tf mode puts
    it inside the momentum, nus outside)."""
    traj = record(_lars_factory(mode, 0.9, True), steps=STEPS,
                  make_scheduler=lambda opt: PolynomialWarmup(opt, decay_steps=STEPS, warmup_steps=5))
    assert len({s.lr for s in traj.steps}) == STEPS
    worst, _ = numpy_lars(traj, mode=mode, momentum=0.9, exempt=bn_bias_names, **HYPER)
    assert worst <= TOL


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "single"])
@pytest.mark.parametrize("case", ["grad_clip", "trust_clip"])
def test_nus_clamps_match_numpy_reference(record, bn_bias_names, case, foreach):
    """Gradients beyond +-10 (a loss scaled 1e4) and trust ratios beyond 50
    (tiny gradients, no weight decay) are clamped as the reference does."""
    if case == "grad_clip":
        factory, scale, hyper = _lars_factory("nus", 0.9, True, foreach, lr=1e-3), 1e4, HYPER
    else:
        hyper = {"eeta": 0.02, "weight_decay": 0.0, "epsilon": 0.0}
        factory, scale = _lars_factory("nus", 0.9, True, foreach, lr=1e3, **hyper), 1e-5
    traj = record(factory, steps=20, loss_scale=scale)
    lr = 1e-3 if case == "grad_clip" else 1e3
    worst, hits = numpy_lars(traj, mode="nus", momentum=0.9, lr=lr, exempt=bn_bias_names, **hyper)
    assert hits[case] > 0, f"the {case} case never clamped"
    assert worst <= TOL
    assert traj.moved() > 0.01


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("bn_bias_separately", [False, True], ids=["one-group", "bn-bias-separately"])
def test_tf_mode_matches_timm_lars(record, bn_bias_names, bn_bias_separately, momentum):
    """At a constant lr, tf mode equals timm's LARS with trust_clip=False:
    timm keeps b = m*b + trust*(g + wd*w) and steps w -= lr*b, so our v = lr*b.
    timm adapts only groups with weight decay unless always_adapt, which maps
    to our per-group `lars` flag."""
    lr = 0.2
    traj = record(_lars_factory("tf", momentum, bn_bias_separately, lr=lr), steps=STEPS)
    exempt = bn_bias_names if bn_bias_separately else set()
    tensors = [torch.tensor(a, dtype=torch.float32) for a in traj.steps[0].before]
    groups = [
        {"params": [t for t, n in zip(tensors, traj.names) if n not in exempt],
         "weight_decay": HYPER["weight_decay"], "always_adapt": True},
        {"params": [t for t, n in zip(tensors, traj.names) if n in exempt],
         "weight_decay": 0.0, "always_adapt": False},
    ]
    timm_lars = timm.optim.Lars([g for g in groups if g["params"]], lr=lr, momentum=momentum,
                                trust_coeff=HYPER["eeta"], eps=HYPER["epsilon"], trust_clip=False)
    for t, step in enumerate(traj.steps):
        for tensor, g in zip(tensors, step.grads):
            tensor.grad = torch.tensor(g, dtype=torch.float32)
        timm_lars.step()
        assert traj.worst_diff(t, [x.double().numpy() for x in tensors]) <= TOL, f"step {t}"


@pytest.mark.parametrize("bucket_bytes", [None, 512], ids=["one-run", "cpu-runs"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("mode", ["nus", "tf"])
def test_foreach_path_equals_single_tensor_path(record, monkeypatch, mode, momentum, bucket_bytes):
    """Same data, same model: the two paths give bit-identical params, also
    when the CPU foreach path works through the params in several runs."""
    if bucket_bytes is not None:
        monkeypatch.setattr("trainer.optim._common.CPU_BUCKET_BYTES", bucket_bytes)
    runs = [record(_lars_factory(mode, momentum, True, foreach), steps=STEPS) for foreach in (True, False)]
    for t in range(STEPS):
        for a, b in zip(runs[0].steps[t].after, runs[1].steps[t].after, strict=True):
            np.testing.assert_array_equal(a, b)


def test_foreach_equals_single_tensor_in_float64_with_mixed_groups():
    """float64 params, a lars group and a lars=False group, buffers created at
    different steps (a param that gets its first grad late)."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(5, 3), (7,), (2, 2, 3), (4,)]
    runs = []
    for foreach in (True, False):
        params = [torch.randn(s, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
                  for i, s in enumerate(shapes)]
        opt = Lars([{"params": params[:2]}, {"params": params[2:], "lars": False}], lr=0.3, momentum=0.9,
                   weight_decay=1e-3, eeta=0.01, epsilon=1e-6, foreach=foreach)
        runs.append((params, opt))
    for step in range(6):
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        for params, opt in runs:
            for i, (p, g) in enumerate(zip(params, grads)):
                p.grad = None if (i == 1 and step < 3) else g.clone()
            opt.step()
        for a, b in zip(runs[0][0], runs[1][0]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
