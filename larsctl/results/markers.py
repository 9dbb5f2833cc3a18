"""Where a job restarted and where its learning-rate warmup ended: the report's markers.

A restart is a segment boundary (larsctl.results.segments): the step a segment started
training from after another ended, labelled with the cause the segments before it ended
with (``preempted``, ``node_fail``; several when segments in between never trained), and
a reshape where its shape (nodes x GPUs per node x per-GPU batch x accumulation) differs
from the shape of the segment that trained before it.  A run without segment records (an
older job, a plain ``python -m trainer --out-dir DIR`` run) has its restarts from the
trainer's resume events in metrics.jsonl: the cause is the trainer's own stop event before
the resume (preempted, cancelled, diverged), else plain ``restart`` (a kill leaves none);
the shape there is ranks x per-rank batch x accumulation.

The warmup ends at round(warmup_epochs x steps per epoch) steps (trainer/optim/schedule.py:
round half up, at least 1), with the steps per epoch the run started with: the schedule
keeps its warmup length across resumes (it is in the checkpoint).

A Run and its segments in, markers out; nothing here draws, and read_segments is the
only reader of files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from larsctl.facts.jobdir import JobPaths, read_json
from larsctl.facts.states import JobState

RESTART, RESHAPE, WARMUP = "restart", "reshape", "warmup"
TRAINER_STOPS = ("preempted", "cancelled", "diverged")  # trainer events that end a run and say why


@dataclass(frozen=True)
class Marker:
    step: int
    kind: str  # RESTART, RESHAPE or WARMUP
    label: str  # the cause(s), or "end of warmup"
    shape: str = ""  # RESHAPE: "2x4x64x2 -> 1x4x64x4"

    @property
    def text(self) -> str:
        """What the figure writes beside the marker."""
        return f"{self.label}: {self.shape}" if self.shape else self.label


def read_segments(job_dir: Path) -> list:
    """The job's segments; [] without attempts/ records.  A newest segment without an end
    record is the running one while the job's record (job.json) says it is active."""
    from larsctl.results.segments import job_segments

    try:
        running = JobState(read_json(JobPaths(job_dir).record).get("state")).is_active
    except (OSError, ValueError, AttributeError):  # no job.json (a copied or plain run), or not a record
        running = False
    return job_segments(job_dir, running=running)


def segment_markers(segments: list) -> list[Marker]:
    """One marker per segment that trained after another ended."""
    out: list[Marker] = []
    causes: list[str] = []  # of the segments that ended since the last one that trained
    trained = None  # the last segment that trained
    for seg in segments:
        if seg.first_step is not None:
            if causes or trained is not None:
                label = ", ".join(dict.fromkeys(causes)) or RESTART
                before = trained or seg
                out.append(_restart(seg.first_step, label, before.shape_text, seg.shape_text))
            causes, trained = [], seg
        if seg.cause is not None:
            causes.append(seg.cause)
    return out


def resume_markers(records: list[dict]) -> list[Marker]:
    """One marker per resume event of metrics.jsonl (a run without segment records)."""
    out: list[Marker] = []
    stopped, shape = None, ""
    for record in records:
        if record.get("kind") != "event":
            continue
        event = record.get("event")
        if event in TRAINER_STOPS:
            stopped = event
        elif event in ("start", "resume"):
            now = _event_shape(record.get("shape"))
            if event == "resume" and isinstance(record.get("step"), int):
                out.append(_restart(record["step"], stopped or RESTART, shape, now))
            stopped, shape = None, now
    return out


def warmup_marker(warmup_epochs: float | None, records: list[dict]) -> Marker | None:
    """The step the learning rate reached its peak; None without a warmup or an epoch length."""
    spe = next((r.get("steps_per_epoch") for r in records if r.get("kind") == "train"
                and isinstance(r.get("steps_per_epoch"), int) and r["steps_per_epoch"] > 0), None)
    if not warmup_epochs or warmup_epochs <= 0 or spe is None:
        return None
    steps = max(1, int(math.floor(warmup_epochs * spe + 0.5)))
    return Marker(steps, WARMUP, "end of warmup")


def run_markers(run) -> list[Marker]:
    """Every marker of a Run (larsctl.results.runs), in step order."""
    restarts = segment_markers(run.segments) if run.segments else resume_markers(run.records)
    warmup = warmup_marker(run.warmup_epochs, run.records)
    return sorted([*restarts, *([warmup] if warmup else [])], key=lambda m: m.step)


def _restart(step: int, label: str, before: str, after: str) -> Marker:
    if before and after and "-" not in (before, after) and before != after:
        return Marker(step, RESHAPE, label, f"{before} -> {after}")
    return Marker(step, RESTART, label)


def _event_shape(shape) -> str:
    """ranks x per-rank batch x accumulation of a start/resume event; "" when it has none."""
    keys = ("ranks", "batch_size", "batches_per_allreduce")
    if not isinstance(shape, dict) or any(shape.get(k) is None for k in keys):
        return ""
    return "x".join(str(shape[k]) for k in keys)
