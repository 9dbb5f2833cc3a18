"""The one reader of ``metrics.jsonl``: records for results, progress for status.

The trainer appends one JSON object per line (kinds train/val/event; see
trainer/metrics.py).  A preempted run resumes from its last checkpoint, so the
steps between that checkpoint and the preemption appear twice; the later copy
wins, as in TensorBoard's own purge of orphaned data.  A torn last line (the
trainer is writing it right now, or was killed mid-line) is skipped.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# How many recent train records the throughput/ETA estimate looks at.
_RATE_WINDOW = 20


def read_records(path: Path, strict: bool = False, error: type[Exception] = ValueError) -> list[dict]:
    """The records of ``metrics.jsonl``, steps re-run after a resume counted once.

    A line that is not a JSON object before the last one is ``error`` (one line
    naming the file and line) when ``strict``, and skipped otherwise.  A missing
    file has no records.
    """
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    records: list[dict] = []
    last_step: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if strict and number != len(lines):
                raise error(f"{path}:{number}: not a JSON object")
            continue
        kind, step = record.get("kind"), record.get("step")
        if kind in ("train", "val") and isinstance(step, int):
            if step <= last_step.get(kind, -1):  # rare: only after a resume
                records = [r for r in records
                           if not (r.get("kind") == kind and r.get("step", -1) >= step)]
            last_step[kind] = step
        records.append(record)
    return records


@dataclass(frozen=True)
class Progress:
    epoch: float | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    val_accuracy: float | None = None
    val_top5: float | None = None
    images_per_sec: float | None = None
    eta_seconds: float | None = None
    last_event: str | None = None
    resumes: int = 0
    done: bool = False

    @property
    def fraction(self) -> float | None:
        if self.step is None or not self.total_steps:
            return None
        return min(1.0, self.step / self.total_steps)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fraction"] = self.fraction
        return d


def summarise(records: list[dict]) -> Progress:
    """Latest epoch/step, loss, validation accuracy, throughput and ETA."""
    train = [r for r in records if r.get("kind") == "train"]
    vals = [r for r in records if r.get("kind") == "val"]
    events = [r for r in records if r.get("kind") == "event"]
    last = train[-1] if train else {}
    step = last.get("step")
    total = last.get("total_steps")
    last_event = events[-1].get("event") if events else None
    if events and step is not None and events[-1].get("step", -1) > step:
        step = events[-1]["step"]  # a checkpoint/done event after the last train line
    done = last_event == "done"
    return Progress(
        epoch=last.get("epoch", events[-1].get("epoch") if events else None),
        step=step,
        total_steps=total,
        loss=last.get("loss"),
        val_accuracy=vals[-1].get("accuracy") if vals else None,
        val_top5=vals[-1].get("top5") if vals else None,
        images_per_sec=last.get("images_per_sec"),
        eta_seconds=0.0 if done else _eta(records, step, total),
        last_event=last_event,
        resumes=sum(1 for e in events if e.get("event") == "resume"),
        done=done,
    )


def _eta(records: list[dict], step, total) -> float | None:
    """Seconds left at the recent step rate, from the train records since the last
    start or resume (the time a job waited in the queue is not training time)."""
    if step is None or not total:
        return None
    since = 0
    for i, r in enumerate(records):
        if r.get("kind") == "event" and r.get("event") in ("start", "resume"):
            since = i
    recent = [r for r in records[since:] if r.get("kind") == "train"][-_RATE_WINDOW:]
    if len(recent) < 2:
        return None
    dt = recent[-1].get("time", 0) - recent[0].get("time", 0)
    ds = recent[-1].get("step", 0) - recent[0].get("step", 0)
    if dt <= 0 or ds <= 0:
        return None
    return max(0.0, (total - step) * dt / ds)


def read_progress(path: Path) -> Progress:
    return summarise(read_records(path))
