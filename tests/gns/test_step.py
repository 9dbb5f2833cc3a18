"""The estimator inside the trainer's own step (in-process, one rank, k micro-batches).

* the hooks see each micro-batch's own gradient and the callback the reduced one: their
  squared norms equal gradients computed separately, micro-batch by micro-batch;
* weight decay (LARS adds wd*w inside its step) is not in them;
* synthetic per-example gradients through train_step: B_simple converges to the truth;
* AMP: the GradScaler's loss scale is removed, overflowed steps are skipped;
* off: no gns fields in metrics.jsonl and a bit-identical checkpoint (also with fp16).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.trainer.helpers import checkpoint_state, records, tensors_equal
from trainer.config import resolve
from trainer.engines.ddp import DDPEngine
from trainer.gns import STATE_SIZE, GradientNoiseScale
from trainer.loop import StepContext, train_step
from trainer.models import build_model
from trainer.optim import create_optimizer
from trainer.run import Run
from trainer.signals import StopFlag


def make_ctx(model, k, b, optimizer="lars", wd=1e-4, scaler=None, amp_dtype=None):
    opt = create_optimizer(optimizer, model, lr=0.1, momentum=0.9, weight_decay=wd, epsilon=1e-5)
    gns = GradientNoiseScale(model, batch_size=b, ranks=1, micro=k, data_size=None, device="cpu")
    return StepContext(model, opt, DDPEngine(use_cuda=False), torch.nn.CrossEntropyLoss(), torch.device("cpu"),
                       scaler, amp_dtype, gns=gns)


def one_step(ctx, images, labels, k):
    train_step(ctx, list(zip(images.chunk(k), labels.chunk(k))))
    return ctx.gns.fields(ctx.gns.payload())


def flat_grad(model, images, labels):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()


@pytest.mark.parametrize("optimizer, wd", [("lars", 0.0), ("lars", 0.5), ("sgd", 0.5)])
def test_norms_are_those_of_each_micro_batch_and_of_their_mean(optimizer, wd):
    torch.manual_seed(0)
    k, b = 3, 4
    model = build_model("smallcnn", 10, "group")
    reference = copy.deepcopy(model)
    images, labels = torch.randn(k * b, 3, 16, 16), torch.randint(0, 10, (k * b,))
    grads = [flat_grad(reference, x, y) for x, y in zip(images.chunk(k), labels.chunk(k))]
    small = sum(g.square().sum() for g in grads) / k
    big = (sum(grads) / k).square().sum()
    out = one_step(make_ctx(model, k, b, optimizer, wd), images, labels, k)
    assert out["gns_steps"] == 1 and out["gns_b_small"] == b and out["gns_b_big"] == k * b
    assert out["gns_small_sq"] == pytest.approx(small.item(), rel=1e-5)
    assert out["gns_big_sq"] == pytest.approx(big.item(), rel=1e-5)
    assert not any(torch.equal(a, b_) for a, b_ in zip(model.parameters(), reference.parameters()))  # it stepped


class PerExampleGradients(torch.nn.Module):
    """loss = mean_j <x_j, w>: the gradient of an example is its input row x_j, whatever w is."""

    def __init__(self, dim):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return (x @ self.w)[:, None]


def test_train_step_noise_scale_converges_on_synthetic_gradients():
    """One rank, k = 4 micro-batches of 8 synthetic per-example gradients (mean mu, |mu|^2 = 1,
    tr Sigma = 40, skewed noise) through train_step, the hooks and the EMA: after 1500 steps
    B_simple is within 5% of 40 (its spread here is about 2%)."""
    rng = np.random.default_rng(0)
    dim, k, b, steps = 128, 4, 8, 1500
    mu = rng.normal(size=dim)
    mu /= np.linalg.norm(mu)
    var = rng.gamma(2.0, size=dim)
    var *= 40.0 / var.sum()
    model = PerExampleGradients(dim)
    opt = create_optimizer("sgd", model, lr=0.01, momentum=0.0)
    gns = GradientNoiseScale(model, batch_size=b, ranks=1, micro=k, data_size=None, device="cpu")
    ctx = StepContext(model, opt, DDPEngine(use_cuda=False), lambda out, labels: out.mean(), torch.device("cpu"),
                      gns=gns)
    x = torch.from_numpy(mu + (rng.exponential(size=(steps, k * b, dim)) - 1.0) * np.sqrt(var)).float()
    labels = torch.zeros(k * b, dtype=torch.int64)
    for t in range(steps):
        train_step(ctx, [(m, labels[:b]) for m in x[t].chunk(k)])
    out = gns.fields(gns.payload())
    assert out["gns_steps"] == steps
    assert out["noise_scale"] == pytest.approx(40.0, rel=0.05)
    assert out["gns_grad_sq"] == pytest.approx(1.0, rel=0.05)


def fp16_autocast_works_on_cpu() -> bool:
    try:
        model = torch.nn.Linear(4, 2)
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(torch.randn(3, 4))
        out.float().sum().backward()
        torch.amp.GradScaler("cpu")
        return True
    except (RuntimeError, TypeError, AttributeError):
        return False


needs_fp16 = pytest.mark.skipif(not fp16_autocast_works_on_cpu(), reason="no fp16 autocast/GradScaler on CPU here")


def amp_step(scaler=None, amp_dtype=None, k=2, b=4):
    torch.manual_seed(0)
    model = build_model("smallcnn", 10, "group")
    ctx = make_ctx(model, k, b, scaler=scaler, amp_dtype=amp_dtype)
    images, labels = torch.randn(k * b, 3, 16, 16), torch.randint(0, 10, (k * b,))
    return one_step(ctx, images, labels, k)


def test_the_loss_scale_is_removed_exactly():
    """fp32 with a GradScaler: gradients are exactly 2^10 times larger; the recorded norms are not."""
    plain = amp_step()
    scaled = amp_step(scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))
    for key in ("gns_small_sq", "gns_big_sq"):
        assert scaled[key] == pytest.approx(plain[key], rel=1e-6), key


@needs_fp16
def test_fp16_autocast_with_grad_scaler_matches_fp32():
    plain = amp_step()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    fp16 = amp_step(scaler=scaler, amp_dtype=torch.float16)
    assert scaler.get_scale() == 2.0**8  # the step was not skipped
    for key in ("gns_small_sq", "gns_big_sq"):
        assert fp16[key] == pytest.approx(plain[key], rel=2e-2), key


@needs_fp16
def test_overflowed_steps_are_skipped():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # fp16 gradients overflow
    out = amp_step(scaler=scaler, amp_dtype=torch.float16)
    assert scaler.get_scale() < 2.0**40  # the scaler skipped the step and backed off
    assert out["gns_steps"] == 0 and out["gns_small_sq"] is None and out["gns_big_sq"] is None
    assert out["noise_scale"] is None


def run_in_process(out_dir, k, amp="off", **extra):
    cfg = resolve({}, {"dataset": "digits", "model": "smallcnn", "norm": "group", "image_size": 16,
                       "batch_size": 16, "batches_per_allreduce": k, "epochs": 1, "warmup_epochs": 0.0,
                       "base_lr": 0.5, "max_steps": 6, "log_every_steps": 2, "workers": 0, "no_cuda": True,
                       "engine": "ddp", "amp": amp, "out_dir": str(out_dir), **extra})
    assert Run(cfg)._train(DDPEngine(use_cuda=False), StopFlag(), False) == 0
    return [r for r in records(out_dir) if r["kind"] == "train"]


@pytest.mark.parametrize("amp", ["off", pytest.param("fp16", marks=needs_fp16)])
def test_off_means_no_fields_and_the_same_training(tmp_path, amp):
    on = run_in_process(tmp_path / "on", 2, amp)
    off = run_in_process(tmp_path / "off", 2, amp, no_noise_scale=True)
    assert [r["step"] for r in on] == [r["step"] for r in off] == [2, 4, 6]
    assert all("noise_scale" in r and "gns_small_sq" in r for r in on)
    assert amp == "fp16" or all(r["noise_scale"] is not None for r in on)
    assert not any(key.startswith("gns_") or key == "noise_scale" for r in off for key in r)
    assert [r["loss"] for r in on] == [r["loss"] for r in off]
    a, b = checkpoint_state(tmp_path / "on", 6), checkpoint_state(tmp_path / "off", 6)
    assert a["config"]["no_noise_scale"] is False and b["config"]["no_noise_scale"] is True
    del a["config"], b["config"]
    assert "gns" not in b and a.pop("gns")["rows"].shape == (1, STATE_SIZE)  # the estimator's sums, per rank
    assert differences(a, b) == []


def differences(a, b, path="") -> list[str]:
    """Paths where two nested checkpoint states differ: tensors bit for bit, other values by ==."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return tensors_equal(a, b, path)
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path} keys"]
        return [d for key in a for d in differences(a[key], b[key], f"{path}/{key}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}/{i}")]
    return [] if a == b else [path]


def test_one_rank_without_accumulation_measures_nothing(tmp_path):
    rows = run_in_process(tmp_path, 1)
    assert rows and not any(key.startswith("gns_") for r in rows for key in r)
