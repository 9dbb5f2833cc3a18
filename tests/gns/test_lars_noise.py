"""The LARS noise scale (trainer/gns.py, docs/lars-noise-scale.md) and measuring every m-th step.

* the trust ratios the estimator weights with are those the Lars step applies (read back
  from real updates, both modes, with weight decay and a lars=False group);
* on a real CNN, the preconditioned window values equal sums of exact per-micro-batch
  gradients weighted per parameter tensor by the square of its trust ratio;
* equal trust ratios (every group lars=False: P = I; one parameter tensor: P = p I) give
  the plain noise scale;
* unequal ones, on exact per-example gradients of known mean and covariance per layer: the
  LARS noise scale converges to tr(P Sigma P) / |P G|^2 while the plain one does not;
* every m-th step: the other steps are not measured (the hooks record nothing), the EMA
  decays by EMA_DECAY**m per measured step; a trainer run logs noise_scale_lars for Lars
  only;
* checkpoints: rows without the preconditioned block (older checkpoints) restore the
  plain block, and a change of shape carries both blocks over.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.gns.test_step import run_in_process
from trainer.engines.ddp import DDPEngine
from trainer.gns import BLOCK, EMA_DECAY, STATE_SIZE, GradientNoiseScale
from trainer.loop import StepContext, train_step
from trainer.models import build_model
from trainer.optim import Lars, create_optimizer
from trainer.optim.lars import NUS_MAX_TRUST, group_trust_ratios


def context(model, optimizer, k, b, criterion=torch.nn.functional.cross_entropy, every=1):
    gns = GradientNoiseScale(model, batch_size=b, ranks=1, micro=k, data_size=None, device="cpu", every=every,
                             optimizer=optimizer)
    return StepContext(model, optimizer, DDPEngine(use_cuda=False), criterion, torch.device("cpu"), gns=gns)


def cnn_and_batch(k, b, seed=0):
    torch.manual_seed(seed)
    model = build_model("smallcnn", 10, "group")
    return model, torch.randn(k * b, 3, 16, 16), torch.randint(0, 10, (k * b,))


def grads_of(model, images, labels):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    return [p.grad.detach().double().clone() for p in model.parameters()]


@pytest.mark.parametrize("mode, wd", [("nus", 0.0), ("nus", 5e-2), ("tf", 5e-2)])
def test_trust_ratios_are_those_the_step_applies(mode, wd):
    """Momentum 0: the step moves w by lr * trust * (g + wd w) (its clamp inactive here), so
    |dw| / (lr |g + wd w|) is the trust ratio it applied; group_trust_ratios gives the same."""
    model, images, labels = cnn_and_batch(1, 8)
    lr = 0.5
    opt = create_optimizer("lars", model, lr=lr, momentum=0.0, weight_decay=wd, epsilon=1e-5,
                           bn_bias_separately=True, mode=mode, eeta=0.02)
    assert [g["lars"] for g in opt.param_groups] == [True, False]
    grads = grads_of(model, images, labels)
    before = [p.detach().double().clone() for p in model.parameters()]
    opt.step()
    index = {id(p): i for i, p in enumerate(model.parameters())}
    for group in opt.param_groups:
        at = [index[id(p)] for p in group["params"]]
        w = torch.stack([before[i].norm() for i in at]).float()
        g = torch.stack([grads[i].norm() for i in at]).float()
        predicted = group_trust_ratios(group, w, g).double()
        applied = torch.stack([(before[i] - p.detach().double()).norm()
                               / (lr * (grads[i] + group["weight_decay"] * before[i]).norm())
                               for i, p in zip(at, group["params"])])
        torch.testing.assert_close(predicted, applied, rtol=1e-4, atol=0)
        if group["lars"]:  # ratios that differ from tensor to tensor, under the nus cap
            assert predicted.max() < NUS_MAX_TRUST and predicted.max() > 2 * predicted.min()
        else:
            assert torch.equal(predicted, torch.ones_like(predicted))


@pytest.mark.parametrize("mode", ["nus", "tf"])
def test_window_values_are_trust_weighted_per_tensor_sums_of_exact_gradients(mode):
    """smallcnn, k = 3 micro-batches of 4: gns_precond_small_sq = mean over micro-batches of
    sum_l p_l^2 |g_s,l|^2 and gns_precond_big_sq = sum_l p_l^2 |g_b,l|^2, with p_l the trust
    ratio of tensor l written out here (eeta |w| / (|g_b| + wd |w| + eps), capped at 50 in
    nus mode; 1 for the lars=False group), from gradients computed separately."""
    k, b, eeta, wd, eps = 3, 4, 0.02, 1e-2, 1e-5
    model, images, labels = cnn_and_batch(k, b)
    reference = build_model("smallcnn", 10, "group")
    reference.load_state_dict(model.state_dict())
    per_micro = [grads_of(reference, x, y) for x, y in zip(images.chunk(k), labels.chunk(k))]
    big = [sum(gs) / k for gs in zip(*per_micro)]
    opt = create_optimizer("lars", model, lr=0.1, momentum=0.9, weight_decay=wd, epsilon=eps,
                           bn_bias_separately=True, mode=mode, eeta=eeta)
    exempt = {id(p) for p in opt.param_groups[1]["params"]}
    p_sq = []
    for q, p, g in zip(model.parameters(), reference.parameters(), big):
        w = p.detach().double().norm()
        trust = eeta * w / (g.norm() + wd * w + eps)
        trust = min(trust, NUS_MAX_TRUST) if mode == "nus" else trust
        p_sq.append(1.0 if id(q) in exempt else float(trust) ** 2)
    assert len(set(round(x, 6) for x in p_sq)) > 3  # the weights differ from tensor to tensor
    small = sum(sum(w * g.square().sum() for w, g in zip(p_sq, gs)) for gs in per_micro) / k
    big_sq = sum(w * g.square().sum() for w, g in zip(p_sq, big))
    ctx = context(model, opt, k, b)
    train_step(ctx, list(zip(images.chunk(k), labels.chunk(k))))
    out = ctx.gns.fields(ctx.gns.payload())
    assert out["gns_precond_small_sq"] == pytest.approx(small.item(), rel=1e-5)
    assert out["gns_precond_big_sq"] == pytest.approx(big_sq.item(), rel=1e-5)
    plain = sum(sum(g.square().sum() for g in gs) for gs in per_micro) / k
    assert out["gns_small_sq"] == pytest.approx(plain.item(), rel=1e-5)


class TwoLayers(torch.nn.Module):
    """loss = mean_j (<x_j, w1> + <y_j, w2>): the per-example gradient of (w1, w2) is exactly
    the example's input (x_j, y_j), whatever the weights."""

    def __init__(self, dims, scales):
        super().__init__()
        self.w = torch.nn.ParameterList(torch.nn.Parameter(torch.full((d,), s / d ** 0.5))
                                        for d, s in zip(dims, scales))

    def forward(self, inputs):
        return sum(x @ w for x, w in zip(inputs.split([w.numel() for w in self.w], dim=1), self.w))[:, None]


def mean_loss(out, labels):
    return out.mean()


def run_two_layers(model, opt, x, k, b, every=1):
    ctx = context(model, opt, k, b, criterion=mean_loss, every=every)
    labels = torch.zeros(b, dtype=torch.int64)
    for t in range(len(x)):
        train_step(ctx, [(m, labels) for m in x[t].chunk(k)], t)
    return ctx.gns


def population(rng, dims, traces):
    """Per layer: a mean of squared norm 1 and diagonal covariance of the given trace."""
    mus, variances = [], []
    for d, trace in zip(dims, traces):
        mu = rng.normal(size=d)
        mus.append(mu / np.linalg.norm(mu))
        var = rng.gamma(2.0, size=d)
        variances.append(var * trace / var.sum())
    return np.concatenate(mus), np.concatenate(variances)


def test_equal_trust_ratios_give_the_plain_noise_scale():
    """P = I (a Lars group with lars=False, two tensors of different noise): the LARS fields
    are the plain ones.  P = p_t I (one tensor; p_t = eeta |w| / |g_b| of step t, != 1): each
    step's preconditioned norms are p_t^2 times the plain ones, so the per-step noise scale
    is the plain one (logged every step: the EMA of a single step is that step's)."""
    rng = np.random.default_rng(0)
    dims, k, b, steps = [32, 32], 4, 8, 30
    mu, var = population(rng, dims, [5.0, 80.0])
    x = torch.from_numpy(mu + (rng.exponential(size=(steps, k * b, sum(dims))) - 1.0) * np.sqrt(var)).float()
    model = TwoLayers(dims, [1.0, 4.0])
    gns = run_two_layers(model, Lars([{"params": list(model.parameters()), "lars": False}], lr=0.0), x, k, b)
    out = gns.fields(gns.payload())
    assert out["noise_scale"] is not None
    for plain, precond in (("gns_small_sq", "gns_precond_small_sq"), ("gns_big_sq", "gns_precond_big_sq"),
                           ("gns_grad_sq", "gns_precond_grad_sq"), ("gns_trace_sigma", "gns_precond_trace_sigma"),
                           ("noise_scale", "noise_scale_lars")):
        assert out[precond] == pytest.approx(out[plain], rel=1e-6), precond

    model = TwoLayers(dims[:1], [3.0])
    ctx = context(model, Lars(model.parameters(), lr=0.0, eeta=0.02), k, b, criterion=mean_loss)
    labels = torch.zeros(b, dtype=torch.int64)
    for t in range(5):
        ctx.gns.acc.state.zero_()  # each step on its own
        train_step(ctx, [(m, labels) for m in x[t, :, :dims[0]].chunk(k)], t)
        out = ctx.gns.fields(ctx.gns.payload())
        ratio = out["gns_precond_big_sq"] / out["gns_big_sq"]
        assert ratio < 0.5  # p_t^2: scaled, not equal
        assert out["gns_precond_small_sq"] / out["gns_small_sq"] == pytest.approx(ratio, rel=1e-5)
        assert out["gns_precond_trace_sigma"] / out["gns_trace_sigma"] == pytest.approx(ratio, rel=1e-4)
        if out["noise_scale"] is not None:
            assert out["noise_scale_lars"] == pytest.approx(out["noise_scale"], rel=1e-4)


def test_lars_noise_scale_converges_where_the_plain_one_is_wrong():
    """Two layers of 64 with exact per-example gradients: |G_1|^2 = |G_2|^2 = 1, tr Sigma_1 =
    10, tr Sigma_2 = 160 (plain B_simple 85), |w_2| = 4 |w_1|, wd = 0, lr = 0 (the weights
    stay put).  With B_b = 128 the trust ratios are p_l = eeta |w_l| / |g_b,l|, about
    eeta |w_l| / sqrt(|G_l|^2 + tr Sigma_l / B_b): layer 2 weighs 7.6 times layer 1 and
    tr(P Sigma P) / |P G|^2 = 143.  After 1500 steps the LARS noise scale is within 6% of 143
    (its spread here is about 2%; the per-step trust ratio's correlation with the batch
    it is computed from adds a bias of about 1%), the plain one within 6% of 85."""
    rng = np.random.default_rng(1)
    dims, traces, k, b, steps = [64, 64], [10.0, 160.0], 4, 32, 1500
    mu, var = population(rng, dims, traces)
    model = TwoLayers(dims, [1.0, 4.0])
    opt = Lars(model.parameters(), lr=0.0, eeta=0.02, mode="tf")
    x = torch.from_numpy(mu + (rng.exponential(size=(steps, k * b, sum(dims))) - 1.0) * np.sqrt(var)).float()
    gns = run_two_layers(model, opt, x, k, b)
    out = gns.fields(gns.payload())
    w_sq = np.array([w.detach().square().sum().item() for w in model.w])
    p_sq = w_sq / (1.0 + np.array(traces) / (k * b))  # eeta^2 cancels
    truth = (p_sq * traces).sum() / p_sq.sum()
    assert truth == pytest.approx(143.0, abs=1.0)
    assert out["noise_scale_lars"] == pytest.approx(truth, rel=0.06)
    assert out["noise_scale"] == pytest.approx(85.0, rel=0.06)
    assert out["gns_precond_grad_sq"] > 0 and out["gns_precond_trace_sigma"] > 0


def test_every_mth_step_only():
    """every = 3 over 9 steps: steps 0, 3, 6 are measured, exactly as an every-step estimator
    saw them; the hooks record nothing on the others; the EMA decays by EMA_DECAY**3 per
    measured step (replayed here from the every-step estimator's per-step values)."""
    k, b = 2, 4
    model, images, labels = cnn_and_batch(k, b)
    opt = create_optimizer("lars", model, lr=0.05, momentum=0.9, weight_decay=1e-4, epsilon=1e-5)
    sparse = context(model, opt, k, b, every=3).gns
    ctx = context(model, opt, k, b)  # every step, on the same model (both hooked)
    assert sparse.acc.decay == pytest.approx(EMA_DECAY ** 3)
    dense_rows, sparse_rows = [], []
    for t in range(9):
        sparse.begin_step(None, t)
        ctx.gns.begin_step(None, t)
        for x, y in zip(images.chunk(k), labels.chunk(k)):
            (torch.nn.functional.cross_entropy(model(x + 0.1 * t), y) / k).backward()
        assert any(sparse._norms) == (t % 3 == 0)
        sparse.after_reduce()
        ctx.gns.after_reduce()
        opt.step()
        opt.zero_grad()
        dense_rows.append(ctx.gns.fields(ctx.gns.payload()))
        sparse_rows.append(sparse.fields(sparse.payload()))
    assert [r["gns_steps"] for r in sparse_rows] == [1, 0, 0] * 3
    for t in (0, 3, 6):
        for key in ("gns_small_sq", "gns_big_sq", "gns_precond_small_sq", "gns_precond_big_sq"):
            assert sparse_rows[t][key] == pytest.approx(dense_rows[t][key], rel=1e-6), (t, key)
    assert sparse_rows[1]["gns_small_sq"] is None and sparse_rows[1]["noise_scale"] == sparse_rows[0]["noise_scale"]
    decay = EMA_DECAY ** 3
    weights = np.array([decay ** 2, decay, 1.0]) * (1 - decay)
    for key, small, big in (("gns_grad_sq", "gns_small_sq", "gns_big_sq"),
                            ("gns_precond_grad_sq", "gns_precond_small_sq", "gns_precond_big_sq")):
        s = sum(w * dense_rows[t][small] for w, t in zip(weights, (0, 3, 6))) / weights.sum()
        g = sum(w * dense_rows[t][big] for w, t in zip(weights, (0, 3, 6))) / weights.sum()
        assert sparse_rows[-1][key] == pytest.approx((2 * b * g - b * s) / b, rel=1e-4), key


def test_trainer_logs_the_lars_noise_scale_for_lars_only(tmp_path):
    """In-process runs of 6 steps, a record every 2, noise_scale_every 4: steps 0 and 4 are
    measured; noise_scale_lars with Lars, null with SGD."""
    lars = run_in_process(tmp_path / "lars", 2, noise_scale_every=4)
    sgd = run_in_process(tmp_path / "sgd", 2, base_op="sgd", noise_scale_every=4)
    assert [r["gns_steps"] for r in lars] == [r["gns_steps"] for r in sgd] == [1, 0, 1]
    assert all(r["noise_scale_lars"] is not None and r["noise_scale"] is not None for r in lars)
    assert all(r["noise_scale_lars"] is None and r["gns_precond_small_sq"] is None for r in sgd)
    assert all(r["noise_scale"] is not None for r in sgd)


def estimator(micro, every=1):
    model = TwoLayers([8, 8], [1.0, 2.0])
    return GradientNoiseScale(model, batch_size=4, ranks=1, micro=micro, data_size=None, device="cpu", every=every,
                              optimizer=Lars(model.parameters(), lr=0.0)), model


def fill(gns, model, steps=30, seed=0):
    """Some measured steps of random per-example gradients (the model's inputs)."""
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        gns.begin_step(None, t)
        for _ in range(gns.micro):
            x = torch.randn(4, 16, generator=gen) + 1.0
            (mean_loss(model(x), None) / gns.micro).backward()
        gns.after_reduce()
        model.zero_grad()


def test_checkpoint_rows_without_the_preconditioned_block_and_a_change_of_shape():
    old, model = estimator(2)
    fill(old, model)
    before = old.fields(old.payload().clone())
    saved = old.saved(old.payload()[None].clone())
    # a checkpoint from before the LARS noise scale: BLOCK numbers per rank
    legacy = {**saved, "rows": saved["rows"][:, :BLOCK]}
    same, _ = estimator(2)
    assert same.restore(legacy, 0) == "noise-scale averages restored"
    assert torch.equal(same.acc.state[:BLOCK], old.acc.state[:BLOCK])
    assert torch.equal(same.acc.state[BLOCK:], torch.zeros(STATE_SIZE - BLOCK))
    out = same.fields(same.payload())
    assert out["noise_scale"] == before["noise_scale"] and out["noise_scale_lars"] is None
    # another k: both blocks carried over through their estimates
    other, _ = estimator(4)
    assert other.restore(saved, 0).startswith("noise-scale averages carried over")
    out = other.fields(other.payload())
    for key in ("gns_grad_sq", "gns_trace_sigma", "noise_scale", "gns_precond_grad_sq", "gns_precond_trace_sigma",
                "noise_scale_lars"):
        assert out[key] == pytest.approx(before[key], rel=1e-4), key
    # another every (EMA decay): carried over too, not copied
    sparse, _ = estimator(2, every=4)
    assert sparse.restore(saved, 0).startswith("noise-scale averages carried over")
    assert sparse.fields(sparse.payload())["noise_scale_lars"] == pytest.approx(before["noise_scale_lars"], rel=1e-4)
