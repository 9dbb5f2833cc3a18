"""Progress of a job from its ``metrics.jsonl`` (pure parsing; the caller reads the file).

The trainer appends one JSON object per line (kinds train/val/event); a torn
last line (the trainer is writing it right now) is skipped, not an error.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# How many recent train records the throughput/ETA estimate looks at.
_RATE_WINDOW = 20


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


def parse_lines(lines) -> list[dict]:
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        if isinstance(obj, dict):
            out.append(obj)
    return out


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
    eta = _eta(train, step, total)
    done = last_event == "done"
    return Progress(
        epoch=last.get("epoch", events[-1].get("epoch") if events else None),
        step=step,
        total_steps=total,
        loss=last.get("loss"),
        val_accuracy=vals[-1].get("accuracy") if vals else None,
        val_top5=vals[-1].get("top5") if vals else None,
        images_per_sec=last.get("images_per_sec"),
        eta_seconds=0.0 if done else eta,
        last_event=last_event,
        resumes=sum(1 for e in events if e.get("event") == "resume"),
        done=done,
    )


def _eta(train: list[dict], step, total) -> float | None:
    """Seconds left at the recent step rate (records after the last restart only)."""
    if step is None or not total:
        return None
    recent = train[-_RATE_WINDOW:]
    # A step going backwards or a long gap marks a restart; keep the tail after it.
    for i in range(len(recent) - 1, 0, -1):
        if recent[i].get("step", 0) <= recent[i - 1].get("step", 0):
            recent = recent[i:]
            break
    if len(recent) < 2:
        return None
    dt = recent[-1].get("time", 0) - recent[0].get("time", 0)
    ds = recent[-1].get("step", 0) - recent[0].get("step", 0)
    if dt <= 0 or ds <= 0:
        return None
    return max(0.0, (total - step) * dt / ds)


def read(path: Path) -> Progress:
    try:
        with open(path) as fh:
            return summarise(parse_lines(fh))
    except FileNotFoundError:
        return Progress()


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
