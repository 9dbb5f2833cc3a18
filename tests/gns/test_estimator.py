"""The noise scale estimators on synthetic gradients of known mean and covariance (no model).

Per-example gradients g = mu + A e with independent, centred, unit-variance, deliberately
non-Gaussian e (so nothing relies on normality): E g = mu, Cov g = Sigma = A A^T, and the
true simple noise scale is tr(Sigma) / |mu|^2.  Small batches are means of b such
examples, the big batch is the mean of the small ones, exactly as the trainer forms them:

* rank form: N ranks, one small batch each (k = 1), big = mean over ranks; each rank has
  its own Accumulator and their states are summed, as the metrics allreduce does;
* micro-batch form: one rank, k micro-batches, big = their mean.

Every seed is fixed, so each assertion is deterministic; the tolerances are stated next to
them (multiples of the standard error of the Monte-Carlo mean, or relative bounds that
are several standard deviations of the EMA estimate wide).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.gns import (BLOCK, EMA_DECAY, FIELDS, STATE_SIZE, Accumulator, estimates, pooled, read_train_records,
                         simple_noise_scale, summarize)

D = 256
B_TRUE = 40.0


def population(seed: int = 0):
    """mu with |mu|^2 = 1 and a diagonal Sigma with tr(Sigma) = B_TRUE (uneven variances)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=D)
    mu /= np.linalg.norm(mu)
    var = rng.gamma(2.0, size=D)
    var *= B_TRUE / var.sum()
    return mu, var


def examples(rng, mu, var, shape):
    """Per-example gradients: centred exponential noise (skewed), unit variance, scaled."""
    e = rng.exponential(size=shape + (D,)) - 1.0
    return mu + e * np.sqrt(var)


def batches(rng, mu, var, trials: int, groups: int, b: int) -> np.ndarray:
    """[trials, groups, D]: the mean gradient of each of `groups` small batches of b examples."""
    return examples(rng, mu, var, (trials, groups, b)).mean(axis=2)


def single_step_estimates(small: np.ndarray, b: int):
    """Per trial: (|G|^2, tr Sigma) from the mean small squared norm and the big one."""
    groups = small.shape[1]
    small_sq = (small ** 2).sum(-1).mean(-1)
    big_sq = (small.mean(1) ** 2).sum(-1)
    return estimates(small_sq, big_sq, b, groups * b), big_sq


@pytest.mark.parametrize("groups, b", [(4, 8), (2, 32)])
def test_single_step_estimators_are_unbiased(groups, b):
    mu, var = population()
    rng = np.random.default_rng(1)
    (grad_sq, trace), big_sq = single_step_estimates(batches(rng, mu, var, 3000, groups, b), b)
    for est, truth in ((grad_sq, 1.0), (trace, B_TRUE)):
        stderr = est.std(ddof=1) / math.sqrt(len(est))
        assert abs(est.mean() - truth) < 4 * stderr, (est.mean(), truth, stderr)
        assert est.mean() == pytest.approx(truth, rel=0.05)
    # The test has the power to see a bias: |G_b|^2 alone overestimates |G|^2 by tr(Sigma)/B_b.
    stderr = big_sq.std(ddof=1) / math.sqrt(len(big_sq))
    assert big_sq.mean() - 1.0 > 10 * stderr
    assert big_sq.mean() == pytest.approx(1.0 + B_TRUE / (groups * b), rel=0.05)


def run_ema(small: np.ndarray, b: int, ranks: int, micro: int, decay: float = EMA_DECAY,
            data_size: int | None = None) -> dict:
    """Feed [steps, ranks * micro, D] small-batch gradients through per-rank Accumulators and
    summarize the summed states, as the trainer does on a logging step."""
    accs = [Accumulator("cpu", decay) for _ in range(ranks)]
    for step in small:
        big_sq = torch.tensor(float((step.mean(0) ** 2).sum()))
        for r, acc in enumerate(accs):
            mine = step[r * micro:(r + 1) * micro]
            acc.add(torch.tensor(float((mine ** 2).sum())), big_sq)
    totals = torch.stack([acc.state for acc in accs]).sum(0).tolist()
    return summarize(totals, ranks=ranks, micro=micro, b_small=b, b_big=ranks * micro * b, data_size=data_size)


@pytest.mark.parametrize("form, ranks, micro", [("rank", 4, 1), ("micro-batch", 1, 4), ("both", 2, 2)])
def test_ema_noise_scale_converges_to_the_true_value(form, ranks, micro):
    """2000 steps, decay 0.99 (about 200 effective steps): B_simple within 5% of tr(Sigma)/|mu|^2
    (the spread of this estimate here is about 2%)."""
    mu, var = population()
    rng = np.random.default_rng(2)
    b = 8
    out = run_ema(batches(rng, mu, var, 2000, ranks * micro, b), b, ranks, micro)
    assert out["gns_steps"] == 2000 and out["gns_b_small"] == b and out["gns_b_big"] == ranks * micro * b
    assert out["noise_scale"] == pytest.approx(B_TRUE, rel=0.05), form
    assert out["gns_grad_sq"] == pytest.approx(1.0, rel=0.05)
    assert out["gns_trace_sigma"] == pytest.approx(B_TRUE, rel=0.05)
    # the window means are the plain averages of the per-step values
    assert out["gns_big_sq"] == pytest.approx(1.0 + B_TRUE / (ranks * micro * b), rel=0.03)
    assert out["gns_small_sq"] == pytest.approx(1.0 + B_TRUE / b, rel=0.03)


def test_rank_sum_of_ema_states_is_the_ema_of_the_rank_mean():
    """What lets the EMAs be kept per rank and summed only on logging steps."""
    rng = np.random.default_rng(3)
    small = rng.uniform(1, 2, size=(50, 3))  # per step, per rank: small_sum
    big = rng.uniform(0.5, 1, size=50)
    accs = [Accumulator("cpu", 0.9) for _ in range(3)]
    pooled = Accumulator("cpu", 0.9)
    for t in range(50):
        for r in range(3):
            accs[r].add(torch.tensor(small[t, r]), torch.tensor(big[t]))
        pooled.add(torch.tensor(small[t].mean()), torch.tensor(big[t]))
    summed = torch.stack([a.state for a in accs]).sum(0)
    torch.testing.assert_close(summed / 3, pooled.state, rtol=1e-5, atol=0)


def test_bias_correction_and_skipped_steps():
    acc = Accumulator("cpu", 0.99)
    acc.add(torch.tensor(float("inf")), torch.tensor(1.0))  # an overflowed step: skipped
    acc.add(torch.tensor(3.0), torch.tensor(float("nan")))
    assert torch.equal(acc.state, torch.zeros(STATE_SIZE))
    acc.add(torch.tensor(6.0), torch.tensor(1.5))  # small_sum over 2 micro-batches: mean 3.0
    out = summarize(acc.state.tolist(), ranks=1, micro=2, b_small=4, b_big=8, data_size=None)
    # one valid step: the bias-corrected EMAs are that step's values exactly (not 1% of them)
    grad_sq, trace = estimates(3.0, 1.5, 4, 8)
    assert (grad_sq, trace) == (0.0, 12.0)
    assert out["gns_steps"] == 1 and out["gns_small_sq"] == 3.0 and out["gns_big_sq"] == 1.5
    assert out["gns_grad_sq"] == pytest.approx(grad_sq, abs=1e-6)
    assert out["gns_trace_sigma"] == pytest.approx(trace, rel=1e-6)
    assert out["noise_scale"] is None  # |G|^2 estimate <= 0: undefined, not a huge number
    acc.add(torch.tensor(4.0), torch.tensor(1.2))
    out = summarize(acc.state.tolist(), ranks=1, micro=2, b_small=4, b_big=8, data_size=None)
    w1, w2 = 0.99 * 0.01, 0.01  # EMA weights of the two steps, normalised by their sum
    small, big = (w1 * 3.0 + w2 * 2.0) / (w1 + w2), (w1 * 1.5 + w2 * 1.2) / (w1 + w2)
    g2, tr = estimates(small, big, 4, 8)
    assert g2 > 0 and out["gns_steps"] == 2 and out["gns_small_sq"] == pytest.approx(2.5)
    assert out["noise_scale"] == pytest.approx(tr / g2, rel=1e-4)
    assert simple_noise_scale(-1.0, 5.0) is None and simple_noise_scale(2.0, 5.0) == 2.5


def finite_population(n: int, dim: int, grad_sq: float, trace: float, seed: int = 4) -> np.ndarray:
    """n vectors whose mean has squared norm grad_sq and whose population covariance
    (1/n) has trace `trace` exactly."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, dim)) * rng.gamma(2.0, size=dim)
    noise -= noise.mean(0)
    noise *= math.sqrt(trace / (noise ** 2).sum(1).mean())
    mu = rng.normal(size=dim)
    return noise + mu * math.sqrt(grad_sq) / np.linalg.norm(mu)


def test_without_replacement_correction_on_a_finite_data_set():
    """N = 100 examples, B_b = 64 drawn without replacement (one step of an epoch: 2 ranks x
    k=2 x b=16), true B_simple 60: close to N, where the correction matters.  Uncorrected,
    |G|^2 comes out low by tr(Sigma)/(N-1) (about 40% here) and tr(Sigma) high by N/(N-1);
    corrected, both are unbiased and B_simple is right."""
    n, b, groups = 100, 16, 4
    pop = finite_population(n, 64, 1.0, 60.0)
    rng = np.random.default_rng(5)
    picks = np.stack([rng.permutation(n)[:groups * b] for _ in range(4000)])
    small = pop[picks].reshape(4000, groups, b, -1).mean(2)
    small_sq = (small ** 2).sum(-1).mean(-1)
    big_sq = (small.mean(1) ** 2).sum(-1)

    def check(est, truth):
        stderr = est.std(ddof=1) / math.sqrt(len(est))
        assert abs(est.mean() - truth) < 4 * stderr, (est.mean(), truth, stderr)

    grad_sq, trace = estimates(small_sq, big_sq, b, groups * b)  # as if the data were infinite
    check(grad_sq, 1.0 - 60.0 / (n - 1))
    check(trace, 60.0 * n / (n - 1))
    assert 1.0 - grad_sq.mean() > 0.3
    grad_sq, trace = estimates(small_sq, big_sq, b, groups * b, data_size=n)
    check(grad_sq, 1.0)
    check(trace, 60.0)

    corrected = run_ema(small[:3000], b, 2, 2, data_size=n)
    uncorrected = run_ema(small[:3000], b, 2, 2)
    assert corrected["gns_data_size"] == n and uncorrected["gns_data_size"] is None
    assert corrected["noise_scale"] == pytest.approx(60.0, rel=0.10)
    assert uncorrected["noise_scale"] > 1.5 * 60.0


def test_estimates_reject_impossible_sizes():
    with pytest.raises(ValueError):
        estimates(1.0, 1.0, 8, 8)
    with pytest.raises(ValueError):
        estimates(1.0, 1.0, 8, 64, data_size=32)


def test_records_read_back_and_pool():
    """metrics.jsonl train records -> per-step rows -> one pooled estimate (gns_steps-weighted)."""
    def record(step, small, big, steps):
        return {"kind": "train", "step": step, "epoch": step / 10, "loss": 1.0,
                **summarize([small * 2 * steps, big * steps, steps, 0, 0, 0] + [0] * BLOCK, ranks=1, micro=2,
                            b_small=4, b_big=8, data_size=None)}
    recs = [record(1, 3.0, 1.5, 1), {"kind": "val", "step": 1}, record(3, 2.0, 1.2, 2), record(4, 0, 0, 0)]
    rows = read_train_records(recs)
    assert [r["step"] for r in rows] == [1, 3, 4] and set(rows[0]) == {"step", "epoch", *FIELDS}
    assert rows[2]["gns_small_sq"] is None  # a window without valid steps
    out = pooled(rows)
    small, big = (3.0 + 2 * 2.0) / 3, (1.5 + 2 * 1.2) / 3
    g2, tr = estimates(small, big, 4, 8)
    assert out == {"steps": 3, "grad_sq": pytest.approx(g2), "trace_sigma": pytest.approx(tr),
                   "noise_scale": pytest.approx(tr / g2), "precond_grad_sq": None, "precond_trace_sigma": None,
                   "noise_scale_lars": None}  # not a LARS run
    assert pooled(rows[2:]) is None
    with pytest.raises(ValueError, match="different batch"):
        pooled([rows[0], {**rows[1], "gns_b_big": 16}])
