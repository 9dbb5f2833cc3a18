"""Lamb against a float64 NumPy reference written from arXiv 1904.00962
(Algorithm 2 with bias correction), step by step on the tiny CNN."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.optim import create_optimizer_lamb

TOL = 1e-6
STEPS = 25
LR, BETAS, EPS, WD = 0.01, (0.9, 0.999), 1e-6, 0.01


def numpy_lamb(traj, *, exempt: set[str]) -> float:
    w = [a.copy() for a in traj.steps[0].before]
    m = [np.zeros_like(a) for a in w]
    v = [np.zeros_like(a) for a in w]
    beta1, beta2 = BETAS
    worst = 0.0
    for t, step in enumerate(traj.steps, start=1):
        for i, g in enumerate(step.grads):
            adapt = traj.names[i] not in exempt
            wd = WD if adapt else 0.0
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1 ** t), v[i] / (1 - beta2 ** t)
            r = m_hat / (np.sqrt(v_hat) + EPS) + wd * w[i]
            w_norm, r_norm = np.linalg.norm(w[i]), np.linalg.norm(r)
            trust = w_norm / r_norm if adapt and w_norm > 0 and r_norm > 0 else 1.0
            w[i] = w[i] - LR * trust * r
        worst = max(worst, traj.worst_diff(t - 1, w))
    return worst


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "single"])
@pytest.mark.parametrize("bn_bias_separately", [False, True], ids=["one-group", "bn-bias-separately"])
def test_lamb_matches_numpy_reference(record, bn_bias_names, bn_bias_separately, foreach):
    traj = record(lambda model: create_optimizer_lamb(model, lr=LR, weight_decay=WD, epsilon=EPS,
                                                      bn_bias_separately=bn_bias_separately, betas=BETAS,
                                                      foreach=foreach), steps=STEPS)
    worst = numpy_lamb(traj, exempt=bn_bias_names if bn_bias_separately else set())
    assert worst <= TOL
    assert traj.moved() > 0.05
    assert traj.losses[-1] < traj.losses[0]


@pytest.mark.parametrize("bucket_bytes", [None, 512], ids=["one-run", "cpu-runs"])
def test_lamb_foreach_equals_single_tensor(record, monkeypatch, bucket_bytes):
    if bucket_bytes is not None:
        monkeypatch.setattr("trainer.optim._common.CPU_BUCKET_BYTES", bucket_bytes)
    runs = [record(lambda model, f=foreach: create_optimizer_lamb(model, lr=LR, weight_decay=WD,
                                                                  bn_bias_separately=True, foreach=f), steps=10)
            for foreach in (True, False)]
    for t in range(10):
        for a, b in zip(runs[0].steps[t].after, runs[1].steps[t].after, strict=True):
            np.testing.assert_array_equal(a, b)
