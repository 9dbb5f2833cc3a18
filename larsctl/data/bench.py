"""`larsctl data bench`: would the trainer's input pipeline keep the GPUs of a plan busy?

Measures images/s of the trainer's own train loaders (trainer.data.build_loaders, with
its augmentation) on this machine: ImageFolder with each number of DataLoader workers,
DALI on the CPU with each number of threads, and DALI "mixed" (nvJPEG decoding on the
GPU) where a GPU is visible. Run it on a compute node of the cluster: the figures are
this node's.

With a cluster and a recipe, the planner says what a step needs: the plan's
images_per_second (effective batch / step time) spread over its GPUs. A loader
runs once per GPU (per rank) on a node with gpus_per_node ranks sharing cpus_per_node
CPUs. The advice follows the measured figures: each measured count of workers is judged
by its own figure (scaled down where its workers exceed a GPU's share of the node's
CPUs), the verdict names the fastest configuration measured (DALI when DALI was), and
only a count beyond those measured is estimated, from the per-worker rate of the most
workers measured (rates grow less than linearly), and said to be unmeasured.
"""
from __future__ import annotations

import math
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from larsctl.data.common import IMAGEFOLDER_SPLITS, detect_layout, usable_cpus
from larsctl.errors import UserError

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
    from larsctl.jobs.history import measured_throughput
    from larsctl.planning.spec import resolve_job

    spec = resolve_job(cluster, recipe, measured=measured_throughput)
    plan, trainer = spec.plan, spec.trainer
    data = trainer.get("data") or ("dali" if trainer.get("data_dir") else "imagefolder")
    return Need(spec.profile.name, str(recipe), plan.nodes, plan.gpus, plan.gpus_per_node,
                spec.profile.cpus_per_node, plan.estimate.step_seconds, plan.estimate.images_per_second,
                data, int(trainer.get("workers", trainer_default("workers"))),
                int(trainer.get("image_size", trainer_default("image_size"))))


def feed(m: Measurement, need: Need) -> float:
    """Images/s one rank's loader gives on the plan's node: as measured here, scaled down where
    its workers exceed a GPU's share of the node's CPUs (GPU decoding as measured)."""
    if m.loader == "dali mixed":
        return m.images_per_second
    share = need.cpus_per_node / need.gpus_per_node
    return m.images_per_second * min(1.0, share / max(1, m.workers))


def option(m: Measurement) -> str:
    """The trainer options that run a measured configuration."""
    if m.loader == "imagefolder":
        return f"--data imagefolder with --set workers={m.workers}"
    how = "GPU decoding" if m.loader == "dali mixed" else "measured decoding on the CPU"
    return f"--data dali with --set workers={m.workers} ({how})"


def _unit(loader: str) -> str:
    return "worker" if loader == "imagefolder" else "thread"  # DataLoader workers, DALI threads


def _count(n: int, loader: str) -> str:
    return f"{n} {_unit(loader)}{'' if n == 1 else 's'}"


def _fastest(rated: list[Measurement], rate) -> Measurement:
    return max(rated, key=lambda m: (rate(m), -m.workers))  # a tie: the fewer workers


def verdict(measurements: list[Measurement], need: Need) -> list[str]:
    """Plain sentences from the measured figures: per loader, does it keep up, and with how
    many workers; then the verdict, which names the fastest configuration measured."""
    lines = [f"plan: {need.nodes} node(s) x {need.gpus_per_node} GPUs, step {need.step_seconds * 1e3:.0f} ms, "
             f"{need.images_per_second:,.0f} images/s in all = {need.per_node:,.0f} per node, "
             f"{need.per_gpu:,.0f} per GPU; the recipe loads with --data {need.data}, workers={need.workers}"]
    rated = [m for m in measurements if m.images_per_second]
    guesses = []
    for loader in ("imagefolder", "dali cpu"):
        mine = [m for m in rated if m.loader == loader]
        if mine:
            line, guess = _cpu_loader(loader, mine, need)
            lines.append(line)
            guesses += [guess] if guess else []  # not measured
    mixed = [m for m in rated if m.loader == "dali mixed"]
    if mixed:
        rate = max(m.images_per_second for m in mixed)
        lines.append(f"dali mixed: {rate:,.0f} images/s per GPU here: "
                     f"{'keeps up' if rate >= need.per_gpu else 'would starve the GPUs'} ({need.per_gpu:,.0f} needed)")
    lines.append(_verdict(rated, need, guesses, bool(mixed)))
    return lines


def _cpu_loader(loader: str, rated: list[Measurement], need: Need) -> tuple[str, Measurement | None]:
    """A loader decoding on the CPU: its line, and the options it would keep up with beyond
    the counts measured (a guess: the per-worker rate of the most workers measured)."""
    per_gpu = need.per_gpu
    configured = need.workers if loader == "imagefolder" else max(1, need.workers)
    exact = next((m for m in rated if m.workers == configured), None)
    if exact is not None and feed(exact, need) >= per_gpu:
        return f"{loader}: keeps up with {_count(configured, loader)} per GPU ({feed(exact, need):,.0f} >= " \
               f"{per_gpu:,.0f} images/s)", None
    shown = exact or _fastest(rated, lambda m: feed(m, need))
    share = need.cpus_per_node / need.gpus_per_node
    capped = f", {share:g} CPUs per GPU" if shown.workers > share else ""
    which = "" if exact else ", the fastest measured,"
    line = (f"{loader}: {_count(shown.workers, loader)} per GPU{which} would starve the GPUs ({feed(shown, need):,.0f} "
            f"< {per_gpu:,.0f} images/s, {feed(shown, need) / per_gpu:.0%} busy{capped})")
    enough = [m for m in rated if feed(m, need) >= per_gpu]
    if enough:
        least = min(enough, key=lambda m: m.workers)
        return f"{line}; {least.workers} per GPU keep up as measured ({feed(least, need):,.0f} images/s)", None
    most = max(rated, key=lambda m: m.workers)
    needed = math.ceil(per_gpu / most.per_worker)
    at = f"at the {most.per_worker:,.0f} images/s per {_unit(loader)} measured with {most.workers}"
    if needed * need.gpus_per_node > need.cpus_per_node:
        return (f"{line}; not even all {need.cpus_per_node} CPUs of a node would do {at} "
                f"({need.cpus_per_node * most.per_worker:,.0f} < {need.per_node:,.0f} images/s per node)"), None
    return (f"{line}; {needed} per GPU should keep up {at} ({needed * need.gpus_per_node} of a node's "
            f"{need.cpus_per_node} CPUs; not measured)"), Measurement(loader, needed, None)


def _configured(rated: list[Measurement], need: Need) -> Measurement | None:
    """The measurement of what the recipe runs: --data dali decodes on the GPU where one is
    (DALI on the CPU stands in for it where this node has none)."""
    if need.data == "imagefolder":
        return next((m for m in rated if m.loader == "imagefolder" and m.workers == need.workers), None)
    mixed = [m for m in rated if m.loader == "dali mixed"]
    return max(mixed, key=lambda m: m.images_per_second) if mixed else \
        next((m for m in rated if m.loader == "dali cpu" and m.workers == max(1, need.workers)), None)


def _verdict(rated: list[Measurement], need: Need, guesses: list[Measurement], gpu_measured: bool) -> str:
    if not rated:
        return "verdict: nothing was measured"
    fastest, mine = _fastest(rated, lambda m: feed(m, need)), _configured(rated, need)
    best, per_gpu = feed(fastest, need), need.per_gpu
    if mine is not None and feed(mine, need) >= per_gpu:
        faster = "" if feed(mine, need) >= best else f"; fastest here: {option(fastest)}, {best:,.0f} images/s per GPU"
        return (f"verdict: the input pipeline keeps up: --data {need.data} with workers={need.workers} feeds "
                f"{feed(mine, need):,.0f} >= {per_gpu:,.0f} images/s per GPU{faster}")
    if best >= per_gpu:
        return (f"verdict: as configured the input pipeline would starve the GPUs; use {option(fastest)}, the fastest "
                f"measured here ({best:,.0f} >= {per_gpu:,.0f} images/s per GPU)")
    short = f"(the fastest, {option(fastest)}, feeds {best:,.0f} < {per_gpu:,.0f} images/s per GPU)"
    if guesses:
        counts = ",".join(str(n) for n in sorted({g.workers for g in guesses}))
        return (f"verdict: every configuration measured here would starve the GPUs {short}; "
                f"{' or '.join(option(g) for g in guesses)} should keep up: measure it with --workers {counts}")
    more = "use more CPUs per GPU"
    if not gpu_measured:
        more = f"decode on the GPU (--data dali on a GPU node) or {more}"
    return f"verdict: the input pipeline would starve the GPUs with every loader measured here {short}; {more}"


def fastest_line(measurements: list[Measurement]) -> str:
    """The fastest configuration measured on this node (no plan: as measured)."""
    rated = [m for m in measurements if m.images_per_second]
    if not rated:
        return "fastest here: nothing was measured"
    m = _fastest(rated, lambda m: m.images_per_second)
    return (f"fastest here: {m.loader} with {_count(m.workers, m.loader)}, {m.images_per_second:,.1f} images/s: "
            f"{option(m)}")


def describe(measurements: list[Measurement], image_size: int, batch_size: int, batches: int) -> list[str]:
    return [f"input pipeline on {machine()}: {image_size} px, batch {batch_size}, "
            f"{batches} batches timed after the loader's start-up and prefetch", *table(measurements),
            fastest_line(measurements)]
