"""Read what a job produced: its curves, its settings and its final numbers.

A job directory holds ``job.yaml`` (what was asked), ``tensorboard/`` event
files and ``metrics.jsonl`` (what happened).  A plain trainer run has no job.yaml:
its settings come from the config its newest checkpoint carries.  Curves come from the event files
through TensorBoard's own reader; ``metrics.jsonl`` is the fallback when there
are none or they lag behind it (and the only source of the step -> epoch
mapping and of the start/resume events that bound each segment's wall time).

Nothing here writes or prints; errors are :class:`NoResults` (a UserError) with
one line naming the directory and what is missing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from larsctl.errors import UserError
from larsctl.facts.jobdir import JobPaths
from larsctl.results.metrics import read_records

TRAIN_TAGS = ("train/loss", "train/accuracy", "train/lr", "train/images_per_sec", "train/noise_scale")
VAL_TAGS = ("val/loss", "val/accuracy", "val/top5")
TAGS = TRAIN_TAGS + VAL_TAGS

# metrics.jsonl record kind and key of each tag
_JSONL_KEY = {tag: tuple(tag.split("/")) for tag in TAGS}

# Keep every point: a 90-epoch ImageNet run logs a few thousand per tag, and
# TensorBoard's default reservoir would drop some at random.
_SIZE_GUIDANCE = {"scalars": 0, "tensors": 0}


class NoResults(UserError):
    """A job directory with nothing to read (yet)."""


@dataclass(frozen=True)
class Point:
    step: int
    value: float
    time: float  # unix seconds


@dataclass
class Run:
    """One job's curves and settings, as read from its directory."""

    name: str
    job_dir: Path
    source: str  # "tensorboard" or "metrics.jsonl"
    curves: dict[str, list[Point]]
    spec: dict = field(default_factory=dict)  # job.yaml; a plain run's {"trainer": config}; or {}
    records: list[dict] = field(default_factory=list)  # metrics.jsonl, deduplicated

    # -- settings -----------------------------------------------------------
    def _setting(self, plan_key: str, trainer_key: str | None, cast):
        """job.yaml's plan value, else its trainer value (same number when lr_scaling is keep)."""
        section, key = "plan", plan_key
        value = (self.spec.get("plan") or {}).get(plan_key)
        if value is None and trainer_key:
            section, key = "trainer", trainer_key
            value = (self.spec.get("trainer") or {}).get(trainer_key)
        try:
            return None if value is None else cast(value)
        except (TypeError, ValueError):
            raise NoResults(f"{JobPaths(self.job_dir).job_yaml}: {section}.{key}: expected a number, "
                            f"got {value!r}") from None

    @property
    def effective_batch(self) -> int | None:
        value = self._setting("effective_batch", None, int)
        if value is None:  # a trainer run without job.yaml logs it per step
            value = next((int(r["effective_batch"]) for r in self.records
                          if r.get("kind") == "train" and r.get("effective_batch")), None)
        return value

    @property
    def per_gpu_batch(self) -> int | None:
        return self._setting("per_gpu_batch", "batch_size", int)

    @property
    def base_lr(self) -> float | None:
        return self._setting("base_lr", "base_lr", float)

    @property
    def warmup_epochs(self) -> float | None:
        return self._setting("warmup_epochs", "warmup_epochs", float)

    @property
    def epsilon(self) -> float | None:
        return self._setting("epsilon", "epsilon", float)

    @property
    def optimizer(self) -> str | None:
        return self._setting("base_op", "base_op", lambda value: str(value).upper())

    @property
    def gpus(self) -> int | None:
        return self._setting("gpus", None, int)

    @property
    def steps_per_epoch(self) -> int | None:
        for record in reversed(self.records):
            if record.get("kind") == "train" and record.get("steps_per_epoch"):
                return int(record["steps_per_epoch"])
        return None

    @cached_property
    def segments(self) -> list:
        """The job's segments (larsctl.results.segments), oldest first; [] without attempts/ records."""
        from larsctl.results.markers import read_segments

        return read_segments(self.job_dir)

    @property
    def last_step(self) -> int:
        return max(_last_step(self.curves), 0)

    @property
    def label(self) -> str:
        """Legend text: ``B=<effective batch> <optimizer>``."""
        parts = [f"B={self.effective_batch}" if self.effective_batch else self.name]
        if self.optimizer:
            parts.append(self.optimizer)
        return " ".join(parts)

    # -- curves -------------------------------------------------------------
    def epochs(self, tag: str) -> list[float] | None:
        """The x values of ``tag`` in epochs, or None when the run never said its epoch length."""
        if tag.startswith("val/") and self.records:
            # Validation runs at epoch ends; the record carries the exact epoch.
            by_step = {r["step"]: r["epoch"] for r in self.records if r.get("kind") == "val"}
            if all(p.step in by_step for p in self.curves.get(tag, [])):
                return [float(by_step[p.step]) for p in self.curves.get(tag, [])]
        spe = self.steps_per_epoch
        if not spe:
            return None
        return [p.step / spe for p in self.curves.get(tag, [])]

    def summary(self) -> Summary:
        return summarize(self)


@dataclass(frozen=True)
class Summary:
    """The final numbers of one run (accuracies 0..1, wall time in seconds)."""

    name: str
    job_dir: str
    effective_batch: int | None
    per_gpu_batch: int | None
    base_lr: float | None
    warmup_epochs: float | None
    epsilon: float | None
    optimizer: str | None
    gpus: int | None
    epochs: float | None
    steps: int | None
    best_val_top1: float | None
    last_val_top1: float | None
    last_val_top5: float | None
    wall_time_s: float | None
    gpu_hours: float | None
    source: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# -- reading ----------------------------------------------------------------
def load_run(job_dir: Path, name: str | None = None) -> Run:
    """Read ``job_dir``; raises :class:`NoResults` when it holds no metrics at all."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        raise NoResults(f"{job_dir}: no such job directory")
    paths = JobPaths(job_dir)
    spec = read_spec(paths.job_yaml)
    records = read_records(paths.metrics, strict=True, error=NoResults)
    if not spec:  # a plain trainer run: its checkpoints carry its config
        from larsctl.results.trainer_config import plain_run_config

        config = plain_run_config(job_dir, records)
        spec = {"trainer": config} if config else {}
    curves, source = read_event_files(paths.tensorboard), "tensorboard"
    from_records = curves_from_records(records)
    # A running job's SummaryWriter flushes every few events or 2 minutes, while
    # metrics.jsonl is flushed per line: take the records when they are ahead.
    if _last_step(from_records) > _last_step(curves):
        curves, source = from_records, "metrics.jsonl"
    if not any(curves.values()):
        raise NoResults(f"{job_dir}: no metrics yet (no TensorBoard scalars in tensorboard/, "
                        "no train/val records in metrics.jsonl)")
    return Run(name=name or job_dir.name, job_dir=job_dir, source=source, curves=curves,
               spec=spec, records=records)


def read_spec(path: Path) -> dict:
    """``job.yaml`` (read as a JobSpec) as a mapping; {} when the run was made by the trainer alone."""
    from larsctl.planning.spec import JobSpec, JobSpecError

    try:
        return JobSpec.read(path).to_dict()
    except FileNotFoundError:
        return {}
    except JobSpecError as exc:
        raise NoResults(exc.message) from None


def curves_from_records(records: list[dict]) -> dict[str, list[Point]]:
    curves: dict[str, list[Point]] = {tag: [] for tag in TAGS}
    for record in records:
        for tag, (kind, key) in _JSONL_KEY.items():
            if record.get("kind") == kind and _is_number(record.get(key)):
                curves[tag].append(Point(int(record["step"]), float(record[key]),
                                         float(record.get("time", 0.0))))
    return curves


def read_event_files(logdir: Path) -> dict[str, list[Point]]:
    """Scalars of the known tags from the event files in ``logdir`` (TensorBoard's reader).

    Handles both the legacy ``simple_value`` scalars and the tensor-based ones
    newer writers produce.  Missing directory or no event files -> empty curves.
    """
    curves: dict[str, list[Point]] = {tag: [] for tag in TAGS}
    if not logdir.is_dir() or not any(p.name.startswith("events.out.tfevents")
                                      for p in logdir.iterdir()):
        return curves
    # Imported here: tensorboard costs a fraction of a second that --help should not pay.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(logdir), size_guidance=_SIZE_GUIDANCE)
    acc.Reload()
    tags = acc.Tags()
    for tag in TAGS:
        if tag in tags.get("scalars", []):
            points = [Point(e.step, float(e.value), e.wall_time) for e in acc.Scalars(tag)]
        elif tag in tags.get("tensors", []):
            points = [Point(e.step, float(tensor_util.make_ndarray(e.tensor_proto).item()),
                            e.wall_time) for e in acc.Tensors(tag)]
        else:
            continue
        curves[tag] = drop_rerun_steps(points)
    return curves


def drop_rerun_steps(points: list[Point]) -> list[Point]:
    """Keep the latest copy of steps written again after a resume.

    TensorBoard's reader purges such orphaned steps only for old event-file
    versions, so a resumed job's event files hold both copies.
    """
    kept: list[Point] = []
    for point in points:
        while kept and kept[-1].step >= point.step:
            kept.pop()
        kept.append(point)
    return kept


# -- final numbers ----------------------------------------------------------
def wall_time(run: Run) -> float | None:
    """Seconds spent running, summed over segments (queue time between requeues excluded).

    metrics.jsonl marks each segment with a start/resume event; without it the
    span of the event-file timestamps is the best estimate.
    """
    if run.records:
        total, first, last = 0.0, None, None
        for record in run.records:
            t = record.get("time")
            if not _is_number(t):
                continue
            if record.get("kind") == "event" and record.get("event") in ("start", "resume"):
                if first is not None:
                    total += last - first
                first = last = float(t)
                continue
            first = float(t) if first is None else first
            last = float(t)
        if first is not None:
            total += last - first
        return total
    times = [p.time for points in run.curves.values() for p in points]
    return (max(times) - min(times)) if times else None


def summarize(run: Run) -> Summary:
    # metrics.jsonl holds the exact values (event files store float32), so the
    # final numbers come from it whenever it has validation records.
    final = curves_from_records(run.records)
    if not final["val/accuracy"]:
        final = run.curves
    top1 = final.get("val/accuracy", [])
    top5 = final.get("val/top5", [])
    steps = [p.step for points in run.curves.values() for p in points]
    epochs = _epochs_done(run)
    seconds = wall_time(run)
    gpu_hours = run.gpus * seconds / 3600 if run.gpus and seconds is not None else None
    return Summary(
        name=run.name, job_dir=str(run.job_dir), effective_batch=run.effective_batch,
        per_gpu_batch=run.per_gpu_batch, base_lr=run.base_lr, warmup_epochs=run.warmup_epochs,
        epsilon=run.epsilon, optimizer=run.optimizer, gpus=run.gpus, epochs=epochs,
        steps=max(steps) if steps else None,
        best_val_top1=max(p.value for p in top1) if top1 else None,
        last_val_top1=top1[-1].value if top1 else None,
        last_val_top5=top5[-1].value if top5 else None,
        wall_time_s=seconds, gpu_hours=gpu_hours, source=run.source)


def _epochs_done(run: Run) -> float | None:
    epochs = [float(r["epoch"]) for r in run.records
              if r.get("kind") in ("train", "val") and _is_number(r.get("epoch"))]
    if epochs:
        return max(epochs)
    spe = run.steps_per_epoch
    steps = [p.step for points in run.curves.values() for p in points]
    return max(steps) / spe if spe and steps else None


def _last_step(curves: dict[str, list[Point]]) -> int:
    return max((points[-1].step for points in curves.values() if points), default=-1)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
