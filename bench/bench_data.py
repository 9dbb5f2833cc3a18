"""Throughput of `larsctl data`: prepare and convert per worker, and the trainer's loaders.

Generates ImageNet-like data (500x375 JPEGs, about 80 KB each: smooth colour fields with
noise) in a temporary directory, in the official archive structure, then times

- prepare (archives -> ImageFolder) and convert (ImageFolder -> TFRecord + DALI
  indexes) with 1 and 2 worker processes: images/s, and per worker; each run writes a
  fresh output directory, worker start-up included;
- the time per image of the TFRecord CRC32C (google-crc32c, which
  trainer/data/tfrecord.py uses), measured apart on the records written, against
  convert's time per image, and tensorboard's pure-Python CRC32C beside it (what
  tfrecord.py used before: ~17 ms per 110 KB image);
- the trainer's train loaders (trainer.data.build_loaders, as `larsctl data bench`
  measures them): ImageFolder with 0, 1 and 2 DataLoader workers, DALI on the CPU with 1
  and 2 threads (and DALI mixed where a GPU is visible), 224 px crops.

    .venv/bin/python bench/bench_data.py                    # 4 classes x 128 images, best of 2 rounds
    .venv/bin/python bench/bench_data.py --images-per-class 256 --rounds 3
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from machine import describe as describe_machine  # bench/machine.py (scripts run from bench/)

# Worker processes are spawned and import this script again: heavy imports go in main().


def quiet(*_args) -> None:
    pass


def best_of(rounds: int, run) -> float:
    """The shortest of `rounds` runs (seconds): the least disturbed by other load."""
    times = []
    for _ in range(rounds):
        times.append(run())
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/bench_data.py", description=__doc__.split("\n")[0],
                                     epilog="example: python bench/bench_data.py --images-per-class 128")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--images-per-class", type=int, default=128, help="train images per class (default 128)")
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the JPEGs (default 500x375)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each, the best counts (default 2)")
    parser.add_argument("--batches", type=int, default=10, help="loader batches timed (default 10)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    import torch

    from larsctl.data import bench as loader_bench
    from larsctl.data.convert import convert, list_imagefolder
    from larsctl.data.prepare import prepare
    from larsctl.data.sample import write_sample_archives
    from trainer.data.tfrecord import masked_crc32c, read_records

    width, height = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(1)  # the loaders' and converters' work is what is measured
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    try:
        archives = work / "archives"
        write_sample_archives(archives, classes=args.classes, train_per_class=args.images_per_class,
                              val_per_class=max(2, args.images_per_class // 8), size=(width, height),
                              awkward=False)
        imagefolder = work / "imagenet"
        with contextlib.redirect_stderr(io.StringIO()):
            prepare(archives, imagefolder, workers=2, echo=quiet)
        images = sum(1 for _ in imagefolder.rglob("*.JPEG"))
        mean_kb = sum(p.stat().st_size for p in imagefolder.rglob("*.JPEG")) / images / 1024
        print(f"date: {datetime.date.today().isoformat()}")
        print(f"machine: {describe_machine()}")
        print(f"data: {images} JPEGs of {width}x{height} (mean {mean_kb:.0f} KB) in {args.classes} classes; "
              f"best of {args.rounds} runs")
        print(f"  {'step':<34}{'images/s':>10}{'per worker':>12}")

        def timed(fn, out: Path) -> float:
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):  # progress lines
                fn(out)
            return time.perf_counter() - start

        list_imagefolder(imagefolder)  # imports torchvision once, outside the timed runs

        tfrecord = work / "tfrecord"
        for workers in (1, 2):
            seconds = best_of(args.rounds, lambda: timed(
                lambda out: prepare(archives, out, workers=workers, echo=quiet), work / "p"))
            print(f"  {f'prepare, {workers} worker(s)':<34}{images / seconds:>10.1f}{images / seconds / workers:>12.1f}")
        convert_seconds = {}
        for workers in (1, 2):
            convert_seconds[workers] = best_of(args.rounds, lambda: timed(
                lambda out: convert(imagefolder, out, train_shards=8, val_shards=2, workers=workers, echo=quiet),
                tfrecord))
            rate = images / convert_seconds[workers]
            print(f"  {f'convert, {workers} worker(s)':<34}{rate:>10.1f}{rate / workers:>12.1f}")
        payloads = [p for split in ("train", "validation") for shard in sorted((tfrecord / split).iterdir())
                    for p in read_records(shard)]
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as pure_python_crc

        def crc_ms(function) -> float:  # write_record's CRC of each payload (its 8-byte header's is nothing)
            start = time.perf_counter()
            for payload in payloads:
                function(payload)
            return (time.perf_counter() - start) / len(payloads) * 1e3

        print(f"  convert, 1 worker: {convert_seconds[1] / images * 1e3:.1f} ms per image, of which the TFRecord "
              f"CRC32C (google-crc32c, timed apart) {crc_ms(masked_crc32c):.3f} ms "
              f"(tensorboard's pure-Python CRC32C: {crc_ms(pure_python_crc):.1f} ms)")
        measured = []
        for directory in (imagefolder, tfrecord):
            measured += loader_bench.measure(directory, image_size=224, batch_size=args.batch_size,
                                             workers=(0, 1, 2), batches=args.batches)
        print(f"trainer's train loaders, 224 px crops, batch {args.batch_size}, {args.batches} batches after "
              "start-up and prefetch:")
        for line in loader_bench.table(measured):
            print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
