"""The trainer's data-parallel noise scale against exact per-example values, on real processes.

Set-up: the builtin digits data (1437 training images at 16 px), `smallcnn` with GroupNorm
(no cross-sample statistics, so per-example gradients are well defined), 2 ranks x k=2
micro-batches of b=64 under torchrun (B_s = 64, B_b = 256), 12 epochs = 60 steps, a
metrics line every step.

"At the same weights": the run uses plain SGD with lr 1e-20, no momentum and no weight
decay, so every update is far below half an ulp of every weight: the weights stay
bit-identical to the initial ones (only parameters that start exactly at 0 can move, by
about 1e-20).  Every step of the run therefore sees the weights of the final checkpoint,
and the test computes, at those weights, the exact per-example gradients (torch.func
vmap) of every sample of every epoch the run drew, with the same augmentation (seeded by
(seed, epoch, index)) and the same sample order (trainer.data.sampling).  From them:

1. each logged step's gns_small_sq (mean |G_s|^2 over the 4 micro-batches) and gns_big_sq
   equal the exact values of that step's samples (rel 1e-4);
2. replaying the EMA (decay EMA_DECAY, bias-corrected) and the finite-data correction over
   those exact per-step values gives the logged noise_scale (rel 1e-3);
3. the logged noise_scale is within 15% of the exact B_simple = tr(Sigma)/|G|^2 of the
   data (per-example covariance and mean over each epoch's 1437 augmented samples,
   averaged over the 12 epochs), and both are below B_b.  (The estimate's spread over
   sample orders is about 3.5% at this size, from a simulation with the same per-example
   gradients: 15% is over 4 standard deviations.)

A short LARS run (weights moving, 3 steps, AMP fp16 with a GradScaler) under torchrun
(ddp) and horovodrun (Horovod), each with the estimator on and off: off logs no gns
fields and writes a bit-identical checkpoint; on, Horovod logs the same per-step values
as ddp (its small norms are taken in hooks that run before its in-place allreduce), and
the first step's norms equal the fp32 run's (the loss scale is removed).  The same run in
fp32 under horovodrun covers Horovod's step without a scaler.  TensorBoard gets
train/noise_scale.
"""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

from tests.trainer.helpers import checkpoint_state, records, run, tensors_equal
from trainer.data.digits import default_root, materialise_digits
from trainer.data.imagefolder import TrainImages, scan_folder
from trainer.data.sampling import ResumableTrainSampler
from trainer.gns import EMA_DECAY, pooled, read_train_records
from trainer.models import build_model

pytestmark = pytest.mark.slow

SEED, SIZE, B, K, RANKS, EPOCHS = 42, 16, 64, 2, 2, 12
COMMON = ["--dataset", "digits", "--model", "smallcnn", "--norm", "group", "--image-size", str(SIZE),
          "--workers", "0", "--no-cuda", "--deterministic", "--seed", str(SEED), "--batch-size", str(B),
          "--batches-per-allreduce", str(K), "--val-batch-size", "512", "--label-smoothing", "0",
          "--log-every-steps", "1", "--noise-scale-every", "1"]
FROZEN = ["--base-op", "sgd", "--momentum", "0", "--wd", "0", "--base-lr", "1e-20", "--warmup-epochs", "0"]


def train_records(out_dir):
    return [r for r in records(out_dir) if r["kind"] == "train"]


def launch(launcher, args, out_dir, tmp):
    log = tmp / f"{out_dir.name}.log"
    rc = run(launcher, RANKS, COMMON + args + ["--out-dir", str(out_dir)], log)
    assert rc == 0, log.read_text()[-3000:]
    return train_records(out_dir)


@pytest.fixture(scope="module")
def frozen_ddp(tmp_path_factory, shared_data_dir):
    """The 60-step frozen-weight run under torchrun, shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("gns-ddp")
    out = tmp / "ddp"
    # tests/conftest.py points LARSCTL_DATA at the session's data dir only inside each test;
    # this module-scoped run starts before that, so it points there itself.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LARSCTL_DATA", str(shared_data_dir))
        rows = launch("torchrun", FROZEN + ["--epochs", str(EPOCHS)], out, tmp)
    return out, rows


def per_example_grads(model, images, labels) -> torch.Tensor:
    """[n, parameters] float64: the gradient of each example's cross-entropy, at the model's weights."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p, x, y):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, images, labels)
    return torch.cat([g[name].reshape(len(labels), -1) for name in params], 1).double()


def test_noise_scale_matches_exact_per_example_values(frozen_ddp):
    out, rows = frozen_ddp
    steps_per_epoch = rows[0]["steps_per_epoch"]
    assert [r["step"] for r in rows] == list(range(1, EPOCHS * steps_per_epoch + 1))
    assert rows[-1]["gns_b_small"] == B and rows[-1]["gns_b_big"] == B * K * RANKS == 256

    # the weights every step saw: the final checkpoint's, equal to the initial ones
    torch.manual_seed(SEED)
    model = build_model("smallcnn", 10, "group")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    final = checkpoint_state(out, rows[-1]["step"])["model"]
    assert max((final[k] - initial[k]).abs().max().item() for k in initial) < 1e-15
    model.load_state_dict(final)
    model.train()

    paths = materialise_digits(default_root(), SIZE)
    samples = scan_folder(paths.train_dir, "train_dir").samples
    n = len(samples)
    assert rows[-1]["gns_data_size"] == n == 1437
    images = TrainImages(samples, SIZE, SEED)
    samplers = [ResumableTrainSampler(n, r, RANKS, B, steps_per_epoch * K, SEED, K) for r in range(RANKS)]
    exact_small, exact_big, pop_grad_sq, pop_trace = [], [], [], []
    for epoch in range(EPOCHS):
        xs, ys = zip(*(images[(epoch, i)] for i in range(n)))
        g = per_example_grads(model, torch.stack(xs), torch.tensor(ys))
        mean = g.mean(0)
        pop_grad_sq.append(mean.square().sum().item())
        pop_trace.append((g - mean).square().sum(1).mean().item())  # population covariance (1/N)
        order = []
        for s in samplers:
            s.set_epoch(epoch)
            order.append(s.rank_indices())
        for step in range(steps_per_epoch):
            micro = torch.stack([g[order[r][(step * K + i) * B:(step * K + i + 1) * B]].mean(0)
                                 for r in range(RANKS) for i in range(K)])
            exact_small.append(micro.square().sum(1).mean().item())
            exact_big.append(micro.mean(0).square().sum().item())

    # 1. every step's norms are those of its samples at these weights
    for row, small, big in zip(rows, exact_small, exact_big):
        assert row["gns_steps"] == 1
        assert row["gns_small_sq"] == pytest.approx(small, rel=1e-4), row["step"]
        assert row["gns_big_sq"] == pytest.approx(big, rel=1e-4), row["step"]

    # 2. an independent replay of the bias-corrected EMAs and the estimators (paper, eq. A.2)
    b_s, b_b = B, B * K * RANKS
    ema_s = ema_b = weight = 0.0
    for small, big in zip(exact_small, exact_big):
        ema_s = EMA_DECAY * ema_s + (1 - EMA_DECAY) * small
        ema_b = EMA_DECAY * ema_b + (1 - EMA_DECAY) * big
        weight = EMA_DECAY * weight + (1 - EMA_DECAY)
    small, big = ema_s / weight, ema_b / weight
    trace = (small - big) / (1 / b_s - 1 / b_b)
    grad_sq = (b_b * big - b_s * small) / (b_b - b_s) + trace / n  # sampled without replacement
    trace *= (n - 1) / n
    assert rows[-1]["noise_scale"] == pytest.approx(trace / grad_sq, rel=1e-3)
    assert rows[-1]["gns_grad_sq"] == pytest.approx(grad_sq, rel=1e-3)

    # 3. close to the exact noise scale of the data at these weights, and below B_b
    exact = sum(pop_trace) / sum(pop_grad_sq)
    estimate = rows[-1]["noise_scale"]
    assert estimate == pytest.approx(exact, rel=0.15), (estimate, exact)
    assert exact < b_b and estimate < b_b
    # what a reader of metrics.jsonl gets by pooling the logged windows (equal weights, no EMA)
    whole = pooled(read_train_records(records(out)))
    assert whole["steps"] == len(rows) and whole["noise_scale"] == pytest.approx(exact, rel=0.15)
    print(f"noise scale: trainer (EMA) {estimate:.2f}, pooled windows {whole['noise_scale']:.2f}, exact {exact:.2f} "
          f"(B_b {b_b}, N {n})")  # pytest -s shows it


# Moving weights, and AMP fp16 with its GradScaler (default scale 2^16; CPU autocast) to go
# through the scaler paths of both engines' optimizer_step.
TRAINING = ["--base-op", "lars", "--base-lr", "2", "--warmup-epochs", "0.2", "--epochs", "1", "--max-steps", "3",
            "--checkpoint-every-steps", "3", "--amp", "fp16"]


def on_and_off(launcher, tmp):
    """The same short LARS run (weights move) with the estimator on and off."""
    on = launch(launcher, TRAINING, tmp / "on", tmp)
    off = launch(launcher, TRAINING + ["--no-noise-scale"], tmp / "off", tmp)
    return tmp, on, off


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, shared_data_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LARSCTL_DATA", str(shared_data_dir))
        return on_and_off("torchrun", tmp_path_factory.mktemp("gns-ddp-on-off"))


@pytest.fixture(scope="module")
def horovod_runs(tmp_path_factory, shared_data_dir, horovod):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LARSCTL_DATA", str(shared_data_dir))
        return on_and_off("horovodrun", tmp_path_factory.mktemp("gns-hvd-on-off"))


@pytest.mark.parametrize("runs", ["ddp_runs", "horovod_runs"])
def test_estimator_off_changes_nothing_but_the_fields(runs, request):
    tmp, on, off = request.getfixturevalue(runs)
    assert [r["step"] for r in on] == [r["step"] for r in off] == [1, 2, 3]
    assert all(r["noise_scale"] is not None and r["gns_steps"] == 1 for r in on)
    assert not any(key.startswith("gns_") or key == "noise_scale" for r in off for key in r)
    assert [r["loss"] for r in on] == [r["loss"] for r in off]
    a, b = checkpoint_state(tmp / "on", 3), checkpoint_state(tmp / "off", 3)
    for part in ("model", "optimizer", "scheduler"):
        assert tensors_equal(a[part], b[part]) == [], part
    assert a["scaler"] == b["scaler"] and a["scaler"]["scale"] == 2.0**16  # no overflow, no back-off
    torch.manual_seed(SEED)
    initial = build_model("smallcnn", 10, "group").state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in a["model"].items())  # it trained


def test_horovod_logs_the_same_values_as_ddp(ddp_runs, horovod_runs):
    """Same samples, same weights (2-rank averages are exact in both engines): the same norms.
    Horovod's allreduce overwrites p.grad in place; its small norms come from the hooks before it."""
    _, ddp_on, _ = ddp_runs
    _, hvd_on, _ = horovod_runs
    for h, d in zip(hvd_on, ddp_on, strict=True):
        for key in ("gns_small_sq", "gns_big_sq", "gns_grad_sq", "gns_trace_sigma", "noise_scale"):
            assert h[key] == pytest.approx(d[key], rel=1e-5), (h["step"], key)
        assert h["gns_small_sq"] > h["gns_big_sq"] > 0  # small batches are noisier: not the reduced gradient


def test_fp16_loss_scale_is_removed(frozen_ddp, ddp_runs):
    """Step 1 of the fp16 run (loss scale 2^16) and of the fp32 frozen run: same initial weights,
    same samples, so the same norms up to fp16 rounding; with the scale left in they would
    differ by 2^32."""
    _, fp32 = frozen_ddp
    _, fp16, _ = ddp_runs
    for key in ("gns_small_sq", "gns_big_sq"):
        assert fp16[0][key] == pytest.approx(fp32[0][key], rel=2e-2), key


def test_horovod_without_a_scaler(frozen_ddp, horovod, tmp_path, shared_data_dir):
    """Horovod's other optimizer_step path (fp32: synchronize, the norms, step without
    synchronizing again): step 1 starts from the same weights and samples as the fp32
    frozen ddp run, so its norms are the same; then it trains on."""
    _, frozen = frozen_ddp
    rows = launch("horovodrun", [a for a in TRAINING if a not in ("--amp", "fp16")], tmp_path / "fp32", tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["gns_steps"] == 1 for r in rows)
    for key in ("gns_small_sq", "gns_big_sq"):
        assert rows[0][key] == pytest.approx(frozen[0][key], rel=1e-5), key
    assert rows[2]["gns_big_sq"] != pytest.approx(frozen[2]["gns_big_sq"], rel=1e-3)  # the weights moved


def test_tensorboard_gets_train_noise_scale(frozen_ddp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, rows = frozen_ddp
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    points = acc.Scalars("train/noise_scale")
    assert [p.step for p in points] == [r["step"] for r in rows if r["noise_scale"] is not None]
    assert points[-1].value == pytest.approx(rows[-1]["noise_scale"], rel=1e-6)
