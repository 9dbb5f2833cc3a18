"""The cost of a rank's supervision on the training step: the same step with and without it,
side by side in one process.

What supervision adds to the step path is what trainer.run's loop does per optimizer step:
two ``Heartbeat.set`` calls (phase "data" before the micro-batches are fetched, "step" when
they are in) and one after the step, each a ``struct.pack_into`` into a memory-mapped file;
beside it the heartbeat side process (trainer.supervisor.heartbeat) wakes every 0.5 s, reads
that file and rewrites the rank's heartbeat file every ``period`` seconds (here 1 s, the
shortest the trainer uses).  No collective and no host-device sync is added.

Both sides run trainer.run.step_once on the same synthetic batch, already on the device;
blocks alternate (without, with, without, ...) so that load from other processes hits both
alike; the ratio of the medians and of the fastest blocks are printed, for the smallest
model (the worst case: the shortest step) and a ResNet-18.

    .venv/bin/python bench/bench_heartbeat.py
    .venv/bin/python bench/bench_heartbeat.py --models resnet50 --image-size 224 --batch-size 64   # on a GPU
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainer.engines.ddp import DDPEngine
from trainer.loop import StepContext
from trainer.models import build_model
from trainer.optim import PolynomialWarmup, create_optimizer
from trainer.run import step_once
from trainer.supervisor.heartbeat import Heartbeat

from machine import describe  # bench/machine.py (scripts run from bench/)


def setup(model_name: str, image_size: int, batch_size: int, device):
    torch.manual_seed(0)
    model = build_model(model_name, 10).to(device)
    opt = create_optimizer("lars", model, lr=0.1, momentum=0.9, weight_decay=5e-5, epsilon=1e-5,
                           bn_bias_separately=True)
    sched = PolynomialWarmup(opt, decay_steps=10**6, warmup_steps=10, end_lr=0.0, power=2.0)
    ctx = StepContext(model, opt, DDPEngine(use_cuda=device.type == "cuda"), torch.nn.CrossEntropyLoss(), device)
    batch = [(torch.randn(batch_size, 3, image_size, image_size, device=device),
              torch.randint(0, 10, (batch_size,), device=device))]
    return ctx, sched, batch


def block(ctx, sched, batch, steps: int, first: int, beat) -> float:
    start = time.perf_counter()
    for step in range(first, first + steps):
        if beat is not None:
            beat("data", step)
        if beat is not None:
            beat("step", step)
        step_once(ctx, sched, batch, 42, 0, step)
        if beat is not None:
            beat("data", step + 1)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(model_name: str, args, device, heartbeat: Heartbeat) -> dict:
    ctx, sched, batch = setup(model_name, args.image_size, args.batch_size, device)
    block(ctx, sched, batch, args.steps, 0, None)  # warm-up
    without, with_ = [], []
    step = args.steps
    for _ in range(args.blocks):
        without.append(block(ctx, sched, batch, args.steps, step, None))
        with_.append(block(ctx, sched, batch, args.steps, step + args.steps, heartbeat.set))
        step += 2 * args.steps
    return {"model": model_name, "without_ms": 1e3 * statistics.median(without),
            "with_ms": 1e3 * statistics.median(with_),
            "median_ratio": statistics.median(with_) / statistics.median(without),
            "fastest_ratio": min(with_) / min(without)}


def set_cost_ns(heartbeat: Heartbeat, calls: int = 200_000) -> float:
    start = time.perf_counter_ns()
    for i in range(calls):
        heartbeat.set("step", i)
    return (time.perf_counter_ns() - start) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smallcnn", "resnet18"])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per timed block")
    ap.add_argument("--blocks", type=int, default=15, help="timed blocks per side")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady figures)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        heartbeat = Heartbeat(Path(tmp) / "heartbeat.0.json", 0, period_s=1.0, deadman_s=3600,
                              startup_deadman_s=3600)
        try:
            print(describe())
            print(f"device {device}, {args.image_size} px, batch {args.batch_size}, {args.steps} steps x "
                  f"{args.blocks} blocks per side; heartbeat file every 1 s")
            print(f"Heartbeat.set: {set_cost_ns(heartbeat):.0f} ns per call (3 calls per step)")
            print(f"{'model':<10} {'without ms/step':>16} {'with ms/step':>13} {'median ratio':>13} "
                  f"{'fastest ratio':>14}")
            for name in args.models:
                r = measure(name, args, device, heartbeat)
                print(f"{r['model']:<10} {r['without_ms']:>16.3f} {r['with_ms']:>13.3f} {r['median_ratio']:>13.4f} "
                      f"{r['fastest_ratio']:>14.4f}")
        finally:
            heartbeat.process.kill()
            heartbeat.process.wait()


if __name__ == "__main__":
    main()
