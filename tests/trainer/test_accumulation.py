"""Gradient accumulation: k micro-batches == one batch of k x b, and 2 ranks x k=2 == 1 rank x k=4.

The model is resnet18 with GroupNorm (--norm group): BatchNorm in training mode
normalises each micro-batch with its own statistics, so with BatchNorm the two
sides would legitimately differ; GroupNorm has no cross-sample statistics.
"""
from __future__ import annotations

import copy

import pytest
import torch

from tests.trainer.helpers import TINY, checkpoint_state, records, run
from trainer.engines.ddp import DDPEngine
from trainer.loop import StepContext, train_step
from trainer.models import build_model
from trainer.optim import create_optimizer


def make_ctx(model, engine):
    opt = create_optimizer("lars", model, lr=0.5, momentum=0.9, weight_decay=1e-4, epsilon=1e-5,
                           bn_bias_separately=True)
    return StepContext(model, opt, engine, torch.nn.CrossEntropyLoss(), torch.device("cpu"))


@pytest.mark.parametrize("k", [4])
def test_k_micro_batches_equal_one_batch_of_k_times_b(k):
    torch.manual_seed(0)
    engine = DDPEngine(use_cuda=False)  # a single process: no process group
    model = build_model("resnet18", 10, "group")
    twin, initial = copy.deepcopy(model), copy.deepcopy(model)
    micro, whole = make_ctx(model, engine), make_ctx(twin, engine)
    for _ in range(2):  # two steps: the momentum buffers must agree too
        images, labels = torch.randn(4 * k, 3, 16, 16), torch.randint(0, 10, (4 * k,))
        stats = train_step(micro, list(zip(images.chunk(k), labels.chunk(k))))
        whole_stats = train_step(whole, [(images, labels)])
        assert stats[2] == whole_stats[2] == 4 * k
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters()))  # it trained


def test_two_ranks_k2_match_one_rank_k4_on_the_same_samples(tmp_path):
    """Real processes: torchrun 2 x ddp x k=2 against one process x k=4, batch 8, digits."""
    common = TINY + ["--dataset", "digits", "--norm", "group", "--batch-size", "8", "--epochs", "1",
                     "--warmup-epochs", "0", "--base-lr", "0.5", "--max-steps", "3", "--log-every-steps", "1",
                     "--deterministic", "--val-batch-size", "256"]
    two, one = tmp_path / "two", tmp_path / "one"
    assert run("torchrun", 2, common + ["--batches-per-allreduce", "2", "--out-dir", str(two)],
               tmp_path / "two.log") == 0, (tmp_path / "two.log").read_text()[-3000:]
    assert run("python", 1, common + ["--batches-per-allreduce", "4", "--out-dir", str(one)],
               tmp_path / "one.log") == 0, (tmp_path / "one.log").read_text()[-3000:]
    r2 = [r for r in records(two) if r["kind"] == "train"]
    r1 = [r for r in records(one) if r["kind"] == "train"]
    assert [r["effective_batch"] for r in r2] == [r["effective_batch"] for r in r1] == [32] * 3
    assert r2[0]["steps_per_epoch"] == r1[0]["steps_per_epoch"]  # same LR schedule
    for a, b in zip(r2, r1):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    m2, m1 = checkpoint_state(two, 3)["model"], checkpoint_state(one, 3)["model"]
    start = build_model("resnet18", 10, "group").state_dict()
    for name in m1:
        assert torch.allclose(m2[name], m1[name], rtol=1e-4, atol=1e-5), name
    assert any(not torch.equal(m1[n], start[n]) for n in m1)  # it did train


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_and_channels_last_steps_update_the_weights(amp):
    """--amp fp16 goes through a GradScaler (unscale, inf check, step); bf16 autocasts only."""
    torch.manual_seed(0)
    model = build_model("resnet18", 10).to(memory_format=torch.channels_last)
    initial = copy.deepcopy(model)
    ctx = make_ctx(model, DDPEngine(use_cuda=False))
    ctx.channels_last = True
    ctx.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    # A modest initial scale: the default 2**16 overflows fp16 on the first step, which
    # the scaler then (correctly) skips, leaving nothing to compare.
    ctx.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if amp == "fp16" else None
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    stats = train_step(ctx, list(zip(images.chunk(2), labels.chunk(2))))
    assert torch.isfinite(stats).all() and stats[2] == 8
    assert all(torch.isfinite(p).all() for p in model.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters())]
    assert sum(changed) > len(changed) // 2
    if amp == "fp16":
        assert ctx.scaler.get_scale() == 2.0**8  # no overflow, no back-off


def test_the_stop_flag_is_not_agreed_on_every_step(tmp_path):
    """A GPU step must not wait for the host: the flag is summed over ranks on the first
    step, every STOP_CHECK_EVERY_STEPS steps and on log steps (inside the metrics
    allreduce), not after every step.  A spy on the real engine counts the allreduces."""
    from trainer.config import resolve
    from trainer.run import Run
    from trainer.signals import STOP_CHECK_EVERY_STEPS, StopFlag

    class CountingEngine(DDPEngine):
        calls = 0

        def allreduce_sum(self, tensor):
            CountingEngine.calls += 1
            return super().allreduce_sum(tensor)

    steps = 3 * STOP_CHECK_EVERY_STEPS - 5
    cfg = resolve({}, {"data": "synthetic", "num_classes": 4, "synthetic_length": 8 * 4 * steps,
                       "batch_size": 8, "epochs": 1, "warmup_epochs": 0.0, "max_steps": steps,
                       "log_every_steps": 1000, "model": "resnet18", "image_size": 16, "workers": 0,
                       "no_cuda": True, "engine": "ddp", "out_dir": str(tmp_path)})
    assert Run(cfg)._train(CountingEngine(use_cuda=False), StopFlag(), False) == 0
    assert [r["step"] for r in records(tmp_path) if r["kind"] == "train"] == [steps]
    # steps 1, 10, 20 and the final log step, then one validation pass: not one per step.
    assert CountingEngine.calls <= steps // STOP_CHECK_EVERY_STEPS + 3, CountingEngine.calls
