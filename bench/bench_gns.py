"""Cost of the gradient noise scale estimator: the trainer step with it against without it.

Both sides are the trainer's own step (trainer.run.step_once: per-step reseed,
train_step with k micro-batches, the engine's hooks, Lars, the LR schedule) on the same
model and optimizer (the estimator is attached for its blocks and removed after) and
the same synthetic micro-batches already on the device, plus what the loop does on a
logging step every --log-every steps (the metrics allreduce: a no-op sum in one
process; with the estimator its 6 numbers ride in it and are turned into the metrics
fields).  The estimator side has the parameter hooks
(one vector_norm per parameter and micro-batch) and the reduced-gradient norm and
device-side EMA update per step.  One process, one rank, k = 2 micro-batches (the
micro-batches are the small batches).  Blocks alternate (plain, estimator, plain, ...)
so that load from other processes hits both sides alike; printed: images/s of each
side in wall time and in this process's CPU time (one thread: CPU time hardly moves
with other processes' load), the ratio of the medians, of the fastest blocks and the
median of the ratios of adjacent block pairs, and the overhead in percent of the step
time (target < 1%).  Then, as figures free of that noise, the estimator's per-step work
timed alone against the step time: the hooks' norms (one per parameter and micro-batch,
on gradients of the same sizes), after_reduce (the reduced gradient's norm, the EMA
update) and the logging-step fold spread over its steps.  The work is k + 1 reads of
the gradient (and, for the LARS noise scale, one of the weights) per measured step
whatever the batch, so its share shrinks as the compute per parameter grows (bigger
images or batches, a GPU).

Measuring every m-th step only (``--every``, default the trainer's noise_scale_every)
divides that work by m; the estimator side is timed at m = 1 and at --every, in blocks
alternating with the plain side.  The price is a noisier estimate (an EMA of 100 optimizer
steps holds m times fewer samples): the relative standard error of the logged noise scale
at m = 1 and at --every, from the trainer's Accumulator and summarize over a long
synthetic run (per-example gradients of known B_simple, the benchmark's b and k, a record
every --log-every steps; the spread of the logged values around the truth).

    .venv/bin/python bench/bench_gns.py                 # resnet18, 32 px, 2 x 32, 1 CPU thread
    .venv/bin/python bench/bench_gns.py --model resnet50 --image-size 224 --batch-size 64  # on a GPU
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import numpy as np
import torch

from trainer.config import BY_NAME
from trainer.engines.ddp import DDPEngine
from trainer.gns import EMA_DECAY, Accumulator, GradientNoiseScale, summarize
from trainer.loop import StepContext
from trainer.models import build_model
from trainer.optim import PolynomialWarmup, create_optimizer
from trainer.run import step_once


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine(device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{platform.node()}: {cpu} x {os.cpu_count()} cores{gpu}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def relative_standard_error(every: int, *, b: int, k: int, log_every: int, steps: int = 20000,
                            burn_in: int = 1000, dim: int = 256, b_true: float = 40.0, seed: int = 0) -> float:
    """Spread (standard deviation) of the logged noise_scale around the true B_simple, relative
    to it, when every ``every``-th of ``steps`` optimizer steps is measured: small batches of b
    drawn from a synthetic gradient distribution (mean of squared norm 1, tr Sigma = b_true,
    uneven variances; small-batch means Gaussian), 1 rank x k, the trainer's Accumulator
    (decay EMA_DECAY**every per measured step) and summarize at every logging step after
    ``burn_in`` steps.  The same stream of batches for every ``every``."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=dim)
    mu /= np.linalg.norm(mu)
    var = rng.gamma(2.0, size=dim)
    var *= b_true / var.sum()
    acc = Accumulator("cpu", EMA_DECAY ** every)
    logged = []
    for t in range(steps):
        small = mu + rng.normal(size=(k, dim)) * np.sqrt(var / b)
        if t % every == 0:
            acc.add(torch.tensor(float((small ** 2).sum())), torch.tensor(float((small.mean(0) ** 2).sum())))
        if (t + 1) % log_every == 0:
            out = summarize(acc.state.tolist(), ranks=1, micro=k, b_small=b, b_big=k * b, data_size=None)
            acc.reset_window()
            if t >= burn_in:
                logged.append(out["noise_scale"] if out["noise_scale"] is not None else float("inf"))
    return float(np.sqrt(np.mean((np.asarray(logged) / b_true - 1.0) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32, help="micro-batch size")
    ap.add_argument("--k", type=int, default=2, help="micro-batches per step (>= 2 in one process)")
    ap.add_argument("--log-every", type=int, default=10, help="steps per logging step (the trainer's default)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per timed block")
    ap.add_argument("--blocks", type=int, default=12, help="timed blocks per side")
    ap.add_argument("--every", type=int, default=BY_NAME["noise_scale_every"].default,
                    help="measure every Nth step (default: the trainer's noise_scale_every)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: steady figures on a shared machine; 0: torch's default)")
    args = ap.parse_args()
    if args.k < 2:
        ap.error("--k: one process needs 2+ micro-batches for a noise scale")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    micro = [(torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device),
              torch.randint(0, 1000, (args.batch_size,), device=device)) for _ in range(args.k)]
    model = build_model(args.model, 1000).to(device)
    engine = DDPEngine(use_cuda=device.type == "cuda")
    opt = create_optimizer("lars", model, lr=0.1, momentum=0.9, weight_decay=5e-5, epsilon=1e-5,
                           bn_bias_separately=True)
    model, opt = engine.wrap(model, opt, args.k, False)
    sched = PolynomialWarmup(opt, decay_steps=10**6, warmup_steps=10)
    # One model and optimizer for both sides (two copies could sit differently in memory
    # and caches); the estimator side attaches a fresh GradientNoiseScale (its hooks) for
    # its block and removes it after, so the plain side runs without any hook.
    ctx = StepContext(model, opt, engine, torch.nn.CrossEntropyLoss(), device)
    window = torch.zeros(3, device=device)
    step = [0, 0]  # in this block (logging), in the run (which steps are measured)

    def trainer_step():
        window.add_(step_once(ctx, sched, micro, 42, 0, step[1]))
        step[0] += 1
        step[1] += 1
        if step[0] % args.log_every == 0:  # the loop's logging step: one small allreduce
            gns = ctx.gns
            parts = [window, torch.zeros(1, device=device)] + ([gns.payload()] if gns else [])
            totals = engine.allreduce_sum(torch.cat(parts)).tolist()
            if gns is not None:
                gns.fields(totals[4:])
            window.zero_()

    def attach(every: int = 1):
        ctx.gns = GradientNoiseScale(model, batch_size=args.batch_size, ranks=1, micro=args.k, data_size=None,
                                     device=device, every=every, optimizer=opt)

    def detach():
        ctx.gns.close()
        ctx.gns = None

    images = args.steps * args.k * args.batch_size

    def block(every: int):
        """(images/s of wall time, images/s of this process's CPU time) over one block; every 0:
        without the estimator."""
        with_gns = every > 0
        if with_gns:
            attach(every)
        step[0] = 0  # every block starts a logging window
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            trainer_step()
        sync(device)
        rates = images / (time.perf_counter() - t), images / (time.process_time() - c)
        if with_gns:
            detach()
        return rates

    sides = (0, 1, args.every) if args.every > 1 else (0, 1)
    for every in sides:  # warm-up (allocator, kernels)
        block(every)
    timed: dict[int, list[tuple[float, float]]] = {every: [] for every in sides}
    for _ in range(args.blocks):
        for every in sides:
            timed[every].append(block(every))
    plain = timed[0]

    # The estimator's work outside backward on a measured step, alone: after_reduce on the
    # gradients of a real step (norms of the reduced gradient per parameter, stacking the
    # hook norms, the trust ratios of the LARS noise scale, EMA update) and the fold of a
    # logging step, per step.
    attach()
    gns = ctx.gns
    gns.begin_step(None)
    for x, y in micro:
        (torch.nn.functional.cross_entropy(model(x), y) / args.k).backward()
    hook_norms = [list(norms) for norms in gns._norms]
    reps = 200
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    for i in range(reps):
        for norms, saved in zip(gns._norms, hook_norms):
            norms[:] = saved
        gns._recording = True
        gns.after_reduce()
        if (i + 1) % args.log_every == 0:
            gns.fields(engine.allreduce_sum(gns.payload()).tolist())
    sync(device)
    wall_us, cpu_us = (time.perf_counter() - t) / reps * 1e6, (time.process_time() - c) / reps * 1e6
    # ... and the hooks' work: one norm per parameter and micro-batch (on gradients of the same sizes).
    grads = [p.grad for p in gns.params]
    reps = 20
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(reps):
        gns._recording = True
        for _ in range(args.k):
            for i, g in enumerate(grads):
                gns._hook(i, g)
        for norms in gns._norms:
            norms.clear()
    sync(device)
    hook_wall_us, hook_cpu_us = (time.perf_counter() - t) / reps * 1e6, (time.process_time() - c) / reps * 1e6
    detach()
    opt.zero_grad()

    print(f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}  {machine(device)}")
    print(f"device {device}, model {args.model}, image {args.image_size}, 1 rank x k={args.k} x "
          f"{args.batch_size}, Lars (noise scale and LARS noise scale), log every {args.log_every} steps, "
          f"{args.blocks} blocks x {args.steps} steps per side, torch threads {torch.get_num_threads()}")
    for i, clock in enumerate(("wall", "CPU")):
        a = [x[i] for x in plain]
        p = statistics.median(a)
        print(f"{clock} time")
        print(f"  trainer step:                        {p:8.1f} images/s (blocks: {', '.join(f'{x:.1f}' for x in a)})")
        for every in sides[1:]:
            b = [x[i] for x in timed[every]]
            o = statistics.median(b)
            pairs = statistics.median(y / x for x, y in zip(a, b))
            print(f"  {f'with estimator, every {every} step(s):':36s} {o:8.1f} images/s (blocks: "
                  f"{', '.join(f'{x:.1f}' for x in b)})")
            print(f"    ratio with/without: {o / p:.4f} median, {max(b) / max(a):.4f} best block, {pairs:.4f} median "
                  f"of adjacent pairs; overhead {100 * (p / o - 1):+.2f}% of step time (medians), "
                  f"{100 * (1 / pairs - 1):+.2f}% (pairs) (target < 1%)")
    step_wall_ms = args.k * args.batch_size / statistics.median(x[0] for x in plain) * 1e3
    step_cpu_ms = args.k * args.batch_size / statistics.median(x[1] for x in plain) * 1e3
    print(f"estimator work timed alone, per measured step (gradient {sum(p.numel() for p in gns.params) * 4 / 2**20:.1f} "
          f"MiB, {len(gns.params)} parameters, k={args.k}; step {step_wall_ms:.1f} ms wall, {step_cpu_ms:.1f} ms CPU):")
    for what, w, c in (("hooks (a norm per parameter and micro-batch)", hook_wall_us, hook_cpu_us),
                       (f"after_reduce + logging fold / {args.log_every}", wall_us, cpu_us),
                       ("total", hook_wall_us + wall_us, hook_cpu_us + cpu_us)):
        print(f"  {what:46s} {w:8.0f} us wall = {w / 10 / step_wall_ms:.3f}%, {c:8.0f} us CPU = "
              f"{c / 10 / step_cpu_ms:.3f}% of the step")
    for every in sides[1:]:
        w, c = (hook_wall_us + wall_us) / every, (hook_cpu_us + cpu_us) / every
        print(f"  per step, measuring every {every} step(s): {w:8.0f} us wall = {w / 10 / step_wall_ms:.3f}%, "
              f"{c:8.0f} us CPU = {c / 10 / step_cpu_ms:.3f}% of the step (target < 1%)")
    print(f"relative standard error of the logged noise_scale (synthetic run: true B_simple 40, 1 rank x "
          f"k={args.k} x {args.batch_size}, a record every {args.log_every} steps, EMA memory ~100 steps):")
    for every in sides[1:]:
        print(f"  every {every} step(s): {100 * relative_standard_error(every, b=args.batch_size, k=args.k, log_every=args.log_every):.1f}%")


if __name__ == "__main__":
    main()
