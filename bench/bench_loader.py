"""Throughput of the trainer's ImageFolder loader against a stock torchvision pipeline.

Both read the same files with the same transforms, batch size, workers and rank share;
the stock one draws its randomness from the global RNG (not resumable), ours from
per-sample generators. Prints images/s for each, measured alternately, and the ratio.

    python bench/bench_loader.py --dataset digits --image-size 224 --batch-size 64 --workers 2
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.datasets import ImageFolder

from trainer.data import DataConfig, DataError, build_loaders
from trainer.data.digits import default_root, materialise_digits
from trainer.data.transforms import MEAN, STD


def stock_loader(train_dir: str, image_size: int, batch_size: int, workers: int, rank: int, world: int):
    transform = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(MEAN, STD)])
    dataset = ImageFolder(train_dir, transform=transform)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0, drop_last=True)
    extra = {"persistent_workers": True, "multiprocessing_context": "forkserver"} if workers else {}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      **extra)


def images_per_second(loader, batches: int) -> float:
    start, seen = time.perf_counter(), 0
    for n, (images, _) in enumerate(loader):
        seen += len(images)
        if n + 1 == batches:
            break
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/bench_loader.py", description=__doc__.split("\n")[0],
                                     epilog="example: python bench/bench_loader.py --dataset digits --workers 2")
    parser.add_argument("--dataset", choices=["digits"], default=None)
    parser.add_argument("--train-dir", default=None)
    parser.add_argument("--val-dir", default=None)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=10, help="batches timed per pass (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed passes of each (default 3)")
    args = parser.parse_args(argv)
    train_dir, val_dir = args.train_dir, args.val_dir
    try:
        if args.dataset == "digits":
            paths = materialise_digits(default_root(), args.image_size)
            train_dir, val_dir = str(paths.train_dir), str(paths.val_dir)
        ours = build_loaders(DataConfig(kind="imagefolder", train_dir=train_dir, val_dir=val_dir,
                                        image_size=args.image_size, batch_size=args.batch_size,
                                        workers=args.workers))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stock = stock_loader(train_dir, args.image_size, args.batch_size, args.workers, 0, 1)
    torch.set_num_threads(1)  # the loaders' work is what is measured
    results: dict[str, list[float]] = {"stock torchvision": [], "trainer (resumable)": []}
    for round_ in range(args.rounds + 1):  # round 0 warms up worker processes
        for name, loader in [("stock torchvision", stock), ("trainer (resumable)", ours.train)]:
            if name.startswith("trainer"):
                ours.set_epoch(round_)
            else:
                loader.sampler.set_epoch(round_)
            rate = images_per_second(loader, args.batches)
            if round_:
                results[name].append(rate)
    best = {name: max(rates) for name, rates in results.items()}
    for name, rate in best.items():
        print(f"{name:22s} {rate:9.1f} images/s  (best of {args.rounds}: "
              f"{', '.join(f'{r:.1f}' for r in results[name])})")
    print(f"ratio trainer/stock    {best['trainer (resumable)'] / best['stock torchvision']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
