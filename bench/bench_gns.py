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
the gradient per step whatever the batch, so its share shrinks as the compute per
parameter grows (bigger images or batches, a GPU).

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

import torch

from trainer.engines.ddp import DDPEngine
from trainer.gns import GradientNoiseScale
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32, help="micro-batch size")
    ap.add_argument("--k", type=int, default=2, help="micro-batches per step (>= 2 in one process)")
    ap.add_argument("--log-every", type=int, default=10, help="steps per logging step (the trainer's default)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per timed block")
    ap.add_argument("--blocks", type=int, default=12, help="timed blocks per side")
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
    step = [0]

    def trainer_step():
        window.add_(step_once(ctx, sched, micro, 42, 0, step[0]))
        step[0] += 1
        if step[0] % args.log_every == 0:  # the loop's logging step: one small allreduce
            gns = ctx.gns
            parts = [window, torch.zeros(1, device=device)] + ([gns.payload()] if gns else [])
            totals = engine.allreduce_sum(torch.cat(parts)).tolist()
            if gns is not None:
                gns.fields(totals[4:])
            window.zero_()

    def attach():
        ctx.gns = GradientNoiseScale(model, batch_size=args.batch_size, ranks=1, micro=args.k, data_size=None,
                                     device=device)

    def detach():
        ctx.gns.close()
        ctx.gns = None

    images = args.steps * args.k * args.batch_size

    def block(with_gns: bool):
        """(images/s of wall time, images/s of this process's CPU time) over one block."""
        if with_gns:
            attach()
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

    for with_gns in (False, True):  # warm-up (allocator, kernels)
        block(with_gns)
    plain, ours = [], []
    for _ in range(args.blocks):
        plain.append(block(False))
        ours.append(block(True))

    # The estimator's work outside backward, alone: after_reduce on the gradients of a real
    # step (norm of the reduced gradient, stacking the hook norms, EMA update) and the fold
    # of a logging step, per step.
    attach()
    gns = ctx.gns
    gns.begin_step(None)
    for x, y in micro:
        (torch.nn.functional.cross_entropy(model(x), y) / args.k).backward()
    hook_norms = list(gns._norms)
    reps = 200
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    for i in range(reps):
        gns._norms[:] = hook_norms
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
            for g in grads:
                gns._hook(g)
        gns._norms.clear()
    sync(device)
    hook_wall_us, hook_cpu_us = (time.perf_counter() - t) / reps * 1e6, (time.process_time() - c) / reps * 1e6
    detach()
    opt.zero_grad()

    print(f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}  {machine(device)}")
    print(f"device {device}, model {args.model}, image {args.image_size}, 1 rank x k={args.k} x "
          f"{args.batch_size}, Lars, log every {args.log_every} steps, {args.blocks} blocks x {args.steps} steps "
          f"per side, torch threads {torch.get_num_threads()}")
    for i, clock in enumerate(("wall", "CPU")):
        a, b = [x[i] for x in plain], [x[i] for x in ours]
        p, o = statistics.median(a), statistics.median(b)
        pairs = statistics.median(y / x for x, y in zip(a, b))
        print(f"{clock} time")
        print(f"  trainer step:                {p:8.1f} images/s (blocks: {', '.join(f'{x:.1f}' for x in a)})")
        print(f"  trainer step with estimator: {o:8.1f} images/s (blocks: {', '.join(f'{x:.1f}' for x in b)})")
        print(f"  ratio with/without: {o / p:.4f} median, {max(b) / max(a):.4f} best block, {pairs:.4f} median of "
              f"adjacent pairs; overhead {100 * (p / o - 1):+.2f}% of step time (medians), "
              f"{100 * (1 / pairs - 1):+.2f}% (pairs) (target < 1%)")
    step_wall_ms = args.k * args.batch_size / statistics.median(x[0] for x in plain) * 1e3
    step_cpu_ms = args.k * args.batch_size / statistics.median(x[1] for x in plain) * 1e3
    print(f"estimator work timed alone, per step (gradient {sum(p.numel() for p in gns.params) * 4 / 2**20:.1f} MiB, "
          f"{len(gns.params)} parameters, k={args.k}; step {step_wall_ms:.1f} ms wall, {step_cpu_ms:.1f} ms CPU):")
    for what, w, c in (("hooks (a norm per parameter and micro-batch)", hook_wall_us, hook_cpu_us),
                       (f"after_reduce + logging fold / {args.log_every}", wall_us, cpu_us),
                       ("total", hook_wall_us + wall_us, hook_cpu_us + cpu_us)):
        print(f"  {what:46s} {w:8.0f} us wall = {w / 10 / step_wall_ms:.3f}%, {c:8.0f} us CPU = "
              f"{c / 10 / step_cpu_ms:.3f}% of the step (target < 1%)")


if __name__ == "__main__":
    main()
