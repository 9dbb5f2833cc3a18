"""What the tracker sends, read from metrics.jsonl (trainer/metrics.py writes it) and the
segment records (trainer/supervisor/records.py).

metrics.jsonl is read in file order from a byte offset, whole lines only (a line being
appended is left for the next read).  A train or val record becomes a :class:`Point` at its
step; an event record is passed on as it is (the segment's start, its stop, checkpoints).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from trainer.supervisor.records import AttemptPaths, numbers, read_json
from trainer.tracking.state import ORDER, Key

# metrics.jsonl field -> tracker metric name, per record kind.
METRICS = {
    "train": {"loss": "train/loss", "accuracy": "train/accuracy", "lr": "train/lr",
              "images_per_sec": "train/images_per_sec", "noise_scale": "train/noise_scale",
              "epoch": "train/epoch"},
    "val": {"loss": "val/loss", "accuracy": "val/accuracy", "top5": "val/top5"},
}
STEP_TIME = "train/step_time_s"  # seconds per optimizer step: effective batch / images per second
# The trainer's own word for how its segment ended (the events it writes last), as causes.
ENDINGS = {"done": "completed", "preempted": "preempted", "cancelled": "cancelled", "diverged": "diverged"}


@dataclass(frozen=True)
class Point:
    """The values of one record at one step (``order``: train before val at the same step)."""

    step: int
    order: int
    time: float
    values: dict

    @property
    def key(self) -> Key:
        return self.step, self.order


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def point_of(record: dict) -> Point | None:
    """The tracker's point for a train or val record (None for anything else)."""
    kind, step = record.get("kind"), record.get("step")
    if kind not in METRICS or not isinstance(step, int):
        return None
    values = {name: _number(record.get(field)) for field, name in METRICS[kind].items()}
    if kind == "train":
        ips, batch = _number(record.get("images_per_sec")), _number(record.get("effective_batch"))
        if ips and batch and math.isfinite(ips) and ips > 0:
            values[STEP_TIME] = batch / ips
    values = {k: v for k, v in values.items() if v is not None}
    return Point(step, ORDER[kind], float(record.get("time") or 0.0), values) if values else None


class MetricsFeed:
    """Whole new lines of a metrics.jsonl since the last read, as records."""

    def __init__(self, path: Path, offset: int = 0):
        self.path = Path(path)
        self.offset = offset

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read(self) -> Iterator[tuple[int, dict]]:
        """(the offset where its line ends, record) of each new whole line."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        start = self.offset
        self.offset += data.rfind(b"\n") + 1
        for line in data[:self.offset - start].splitlines(keepends=True):
            start += len(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield start, record


def shape_text(shape: dict | None) -> str | None:
    """A segment's shape: nodes x GPUs per node x per-GPU batch x k from its start record, or
    ranks x per-rank batch x k from the trainer's own start/resume event."""
    if not shape:
        return None
    keys = ("nodes", "gpus_per_node", "per_gpu_batch", "batches_per_allreduce")
    if all(shape.get(k) is not None for k in keys):
        return "x".join(str(shape[k]) for k in keys)
    keys = ("ranks", "batch_size", "batches_per_allreduce")
    if all(shape.get(k) is not None for k in keys):
        ranks = shape["ranks"]
        return f"{ranks} rank{'s' * (ranks != 1)} x {shape['batch_size']} x k={shape['batches_per_allreduce']}"
    return None


def recorded_segments(job_dir: Path) -> dict[int, dict[str, str]]:
    """Tags of the segments the job's records describe: shape, and cause where one ended."""
    out: dict[int, dict[str, str]] = {}
    for number in numbers(job_dir):
        paths = AttemptPaths(Path(job_dir), number)
        start, end = read_json(paths.start) or {}, read_json(paths.end) or {}
        tags = {"shape": shape_text(start.get("shape")), "cause": end.get("cause")}
        tags = {k: str(v) for k, v in tags.items() if v}
        if tags:
            out[number] = tags
    return out


def segment_tags(segments: dict[int, dict[str, str]]) -> dict[str, str]:
    """``segment.<n>.<field>`` tags (MLflow run tags; W&B summary keys)."""
    return {f"segment.{n}.{k}": v for n, tags in sorted(segments.items()) for k, v in tags.items()}
