"""`larsctl data bench`: would the trainer's input pipeline keep the GPUs of a plan busy?

Measures images/s of the trainer's own train loaders (trainer.data.build_loaders, with
its augmentation) on this machine: ImageFolder with each number of DataLoader workers,
DALI on the CPU with each number of threads, and DALI "mixed" (nvJPEG decoding on the
GPU) where a GPU is visible. Run it on a compute node of the cluster: the figures are
this node's.

With a cluster and a recipe, the planner says what a step needs: the plan's
images_per_second (effective batch / step time) spread over its GPUs. A loader
runs once per GPU (per rank) on a node with gpus_per_node ranks sharing cpus_per_node
CPUs; per-worker rates are taken as scaling linearly with workers while CPUs last.
"""
from __future__ import annotations

import math
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from larsctl.errors import UserError
from larsctl.data.common import IMAGEFOLDER_SPLITS, detect_layout, usable_cpus

DEFAULT_WORKERS = (0, 1, 2)


def trainer_default(name: str):
    """A trainer option's default (trainer/config.py is the one place that says it)."""
    from trainer.config import OPTIONS

    return next(option.default for option in OPTIONS if option.name == name)


@dataclass(frozen=True)
class Measurement:
    loader: str                 # "imagefolder", "dali cpu", "dali mixed"
    workers: int                # DataLoader workers / DALI threads
    images_per_second: float | None
    note: str = ""

    @property
    def per_worker(self) -> float | None:
        if self.images_per_second is None:
            return None
        return self.images_per_second / max(1, self.workers)  # 0 workers: the main process loads


def _rate(loaders, batches: int, warmup: int, gpu: bool) -> float:
    def stream():
        epoch = 0
        while True:
            loaders.set_epoch(epoch)
            yield from loaders.train
            epoch += 1

    batches_iter = stream()
    for _ in range(warmup):  # worker start-up, and what the loader prefetched meanwhile
        next(batches_iter)
    seen, start = 0, time.perf_counter()
    for _ in range(batches):
        images, labels = next(batches_iter)
        seen += len(labels)
    if gpu:
        import torch

        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def measure(directory: Path, *, image_size: int = 224, batch_size: int = 32, workers=DEFAULT_WORKERS,
            batches: int = 20, seed: int = 0) -> list[Measurement]:
    import torch

    from trainer.data import DataConfig, DataError, build_loaders

    directory = Path(directory)
    layout = detect_layout(directory)
    common = dict(image_size=image_size, batch_size=batch_size, val_batch_size=batch_size, seed=seed)
    if layout == "imagefolder":
        train, val = (str(directory / split) for split in IMAGEFOLDER_SPLITS)
        configs = [("imagefolder", w, DataConfig(kind="imagefolder", train_dir=train, val_dir=val, workers=w,
                                                 **common)) for w in workers]
    else:
        threads = sorted({max(1, w) for w in workers})
        configs = [("dali cpu", t, DataConfig(kind="dali", data_dir=str(directory), workers=t, **common))
                   for t in threads]
        if torch.cuda.is_available():
            configs.append(("dali mixed", threads[-1], DataConfig(kind="dali", data_dir=str(directory),
                                                                  workers=threads[-1], use_gpu=True, **common)))
    out = []
    for name, count, cfg in configs:
        try:
            with warnings.catch_warnings():  # more workers than this machine's CPUs: measured anyway
                warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
                loaders = build_loaders(cfg)
                # Drain the prefetched batches (DataLoader: 2 per worker; DALI: its queue of 2)
                # before timing, so the figure is the rate batches are made at.
                warmup = 1 + (2 * count if name == "imagefolder" else 2)
                out.append(Measurement(name, count, _rate(loaders, batches, warmup, cfg.use_gpu)))
        except DataError as exc:
            raise UserError(str(exc)) from None
        finally:
            loaders = None  # noqa: F841 - stops DataLoader workers / frees DALI pipelines now
    if layout == "tfrecord" and not torch.cuda.is_available():
        out.append(Measurement("dali mixed", 0, None, "no GPU on this node"))
    return out


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001 - a description only
        gpu = "no GPU"
    return f"{platform.node()}, {usable_cpus()} CPUs, {gpu}"


def table(measurements: list[Measurement]) -> list[str]:
    lines = [f"  {'loader':<13}{'workers':>8}{'images/s':>11}{'per worker':>12}"]
    for m in measurements:
        if m.images_per_second is None:
            lines.append(f"  {m.loader:<13}{'-':>8}{'-':>11}{'':>12}  ({m.note})")
        else:
            lines.append(f"  {m.loader:<13}{m.workers:>8}{m.images_per_second:>11.1f}{m.per_worker:>12.1f}")
    return lines


# --- what the plan needs -----------------------------------------------------------------

@dataclass(frozen=True)
class Need:
    cluster: str
    recipe: str
    nodes: int
    gpus: int
    gpus_per_node: int
    cpus_per_node: int
    step_seconds: float
    images_per_second: float   # the whole job
    data: str                  # the recipe's loader
    workers: int               # the recipe's workers (per rank)
    image_size: int

    @property
    def per_gpu(self) -> float:
        return self.images_per_second / self.gpus

    @property
    def per_node(self) -> float:
        return self.per_gpu * self.gpus_per_node


def plan_need(cluster: str, recipe: Path) -> Need:
    from larsctl.planning.spec import resolve_job

    spec = resolve_job(cluster, recipe)
    plan, trainer = spec.plan, spec.trainer
    data = trainer.get("data") or ("dali" if trainer.get("data_dir") else "imagefolder")
    return Need(spec.profile.name, str(recipe), plan.nodes, plan.gpus, plan.gpus_per_node,
                spec.profile.cpus_per_node, plan.estimate.step_seconds, plan.estimate.images_per_second,
                data, int(trainer.get("workers", trainer_default("workers"))),
                int(trainer.get("image_size", trainer_default("image_size"))))


def verdict(measurements: list[Measurement], need: Need) -> list[str]:
    """Plain sentences: per loader, does it keep up, and with how many workers; then the verdict."""
    lines = [f"plan: {need.nodes} node(s) x {need.gpus_per_node} GPUs, step {need.step_seconds * 1e3:.0f} ms, "
             f"{need.images_per_second:,.0f} images/s in all = {need.per_node:,.0f} per node, "
             f"{need.per_gpu:,.0f} per GPU; the recipe loads with --data {need.data}, workers={need.workers}"]
    g, cpus = need.gpus_per_node, need.cpus_per_node
    ok_as_configured, fixes = False, []
    for loader in ("imagefolder", "dali cpu"):
        rated = [m for m in measurements if m.loader == loader and m.images_per_second]
        if not rated:
            continue
        per_worker = max(m.per_worker for m in [m for m in rated if m.workers >= 1] or rated)
        unit = "workers" if loader == "imagefolder" else "threads"
        exact = next((m for m in rated if m.workers == need.workers), None)
        # One loader per GPU; together they have the node's CPUs, no more.
        one = exact.images_per_second if exact else max(1, need.workers) * per_worker
        configured = min(one, cpus * per_worker / g)
        needed = math.ceil(need.per_gpu / per_worker)
        head = f"{loader}: {per_worker:,.0f} images/s per {unit[:-1]} here"
        mine = (loader == "imagefolder") == (need.data == "imagefolder")
        if configured >= need.per_gpu:
            lines.append(f"{head}: keeps up with {need.workers} {unit} per GPU "
                         f"({configured:,.0f} >= {need.per_gpu:,.0f} images/s)")
            ok_as_configured |= mine
        elif needed * g <= cpus:
            lines.append(f"{head}: {need.workers} {unit} per GPU would starve the GPUs ({configured:,.0f} < "
                         f"{need.per_gpu:,.0f} images/s, {configured / need.per_gpu:.0%} busy); {needed} per GPU "
                         f"keep up ({needed * g} of a node's {cpus} CPUs)")
            fixes.append(f"--data {loader.split()[0]} with --set workers={needed}")
        else:
            lines.append(f"{head}: would starve the GPUs even with all {cpus} CPUs of a node "
                         f"({cpus * per_worker:,.0f} < {need.per_node:,.0f} images/s per node)")
    mixed = [m for m in measurements if m.loader == "dali mixed" and m.images_per_second]
    if mixed:
        rate = max(m.images_per_second for m in mixed)
        keeps = rate >= need.per_gpu
        lines.append(f"dali mixed: {rate:,.0f} images/s per GPU here: "
                     f"{'keeps up' if keeps else 'would starve the GPUs'} ({need.per_gpu:,.0f} needed)")
        if keeps:
            fixes.append("--data dali (mixed GPU decoding, the default on GPU nodes)")
        ok_as_configured |= keeps and need.data == "dali"
    if ok_as_configured:
        lines.append(f"verdict: the input pipeline keeps up: --data {need.data} with workers={need.workers} feeds "
                     f"{need.per_gpu:,.0f} images/s per GPU")
    elif fixes:
        lines.append(f"verdict: as configured the input pipeline would starve the GPUs; use {' or '.join(fixes)}")
    else:
        lines.append("verdict: the input pipeline would starve the GPUs with every loader measured here; "
                     "decode on the GPU (--data dali on a GPU node) or use more CPUs per GPU")
    return lines


def describe(measurements: list[Measurement], image_size: int, batch_size: int, batches: int) -> list[str]:
    return [f"input pipeline on {machine()}: {image_size} px, batch {batch_size}, "
            f"{batches} batches timed after the loader's start-up and prefetch", *table(measurements)]
