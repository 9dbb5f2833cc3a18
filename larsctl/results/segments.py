"""A job's segments as ``status``, ``report`` and ``status --json`` show them.

A segment is one run of the job's batch script (the first, each requeue, each chain
segment, each resume).  What it did and why it ended come from its records
(trainer.supervisor.records: ``attempts/<n>/``) and from the trainer's events in
metrics.jsonl (the step it resumed from, which checkpoint, which newer ones it skipped).
A segment whose batch script could not record its end (it died with its node) gets its
cause from the same classification the batch script uses, with what the scheduler
recorded of the run (``JobInfo.cause``).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from larsctl.results.metrics import read_records
from trainer import outputs
from trainer.supervisor.causes import Cause
from trainer.supervisor.classify import classify
from trainer.supervisor.records import Attempt, read_attempts

SHAPE_KEYS = ("nodes", "gpus_per_node", "per_gpu_batch", "batches_per_allreduce")


@dataclass(frozen=True)
class Segment:
    number: int
    cause: str | None          # None while it runs
    first_step: int | None     # the step it started from (0, or the checkpoint it resumed from)
    last_step: int | None      # the last step it trained
    steps_lost: int | None     # steps trained after the checkpoint the next segment resumed from
    started: str | None        # ISO 8601, UTC
    ended: str | None
    host: str | None           # where the fault was, when one host was
    detail: str = ""
    action: str | None = None  # resume / stop, as the policy decided
    reason: str = ""           # why (the policy's words: "crash loop: ...", "no restarts left ...")
    scheduler_id: str | None = None
    shape: dict | None = None  # nodes, gpus_per_node, per_gpu_batch, batches_per_allreduce
    resumed_from: str | None = None  # the checkpoint it loaded
    skipped: list = field(default_factory=list)  # [[newer checkpoint, why it was not used], ...]

    @property
    def shape_text(self) -> str:
        """nodes x GPUs per node x per-GPU batch x accumulation, e.g. 2x4x64x2."""
        if not self.shape or any(self.shape.get(k) is None for k in SHAPE_KEYS):
            return "-"
        return "x".join(str(self.shape[k]) for k in SHAPE_KEYS)

    def to_dict(self) -> dict:
        return {**asdict(self), "shape_text": self.shape_text}


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _window(records: list[dict], start: float, end: float) -> list[dict]:
    return [r for r in records if start <= r.get("time", -1) < end]


def _last_step(attempt: Attempt, inside: list[dict]) -> int | None:
    steps = [r["step"] for r in inside if r.get("kind") in ("train", "event") and isinstance(r.get("step"), int)]
    steps += [int(r.get("step") or 0) for r in attempt.ranks.values()]
    steps += [int(h.get("step") or 0) for h in attempt.heartbeats.values()]
    if attempt.end and isinstance(attempt.end.get("step"), int):
        steps.append(attempt.end["step"])
    return max(steps) if steps else None


def _ending(attempt: Attempt, last: bool, running: bool, scheduler: tuple[Cause, str] | None) -> dict | None:
    """The end record, or one derived now for a segment whose batch script did not write it."""
    end = attempt.end
    if end is not None:
        if last and scheduler and end.get("cause") == Cause.CANCELLED.value and \
                scheduler[0] in (Cause.PREEMPTED, Cause.WALLTIME):
            # The TERM the batch script passed on came from the scheduler's preemption or time
            # limit, and the trainer checkpointed on it: that is a preemption.
            return {**end, "cause": Cause.PREEMPTED.value, "detail": f"{end.get('detail')}; the scheduler: "
                                                                       f"{scheduler[1]}",
                    "reason": "ended by the scheduler; larsctl resume continues it"}
        return end
    if last and running:
        return None
    ranks = int((attempt.start or {}).get("ranks") or max([0, *attempt.heartbeats]) + 1)
    ending = classify(attempt, ranks, scheduler=scheduler if last else None)
    return {**ending.to_dict(), "time": None, "action": None,
            "reason": "derived by larsctl: the batch script did not record the end"}


def job_segments(job_dir: Path | str, running: bool, scheduler: tuple[Cause, str] | None = None) -> list[Segment]:
    """The segments of the job in ``job_dir``, oldest first.  ``running``: the job runs now (its
    newest segment without an end is that run; a job waiting again after its node died has
    none running); ``scheduler``: (cause, words) the scheduler gives the job's newest run, for
    a newest segment without an end record."""
    attempts = read_attempts(job_dir)
    if not attempts:
        return []
    records = read_records(Path(job_dir) / outputs.METRICS_FILE)
    starts = [(a.start or {}).get("time", 0.0) for a in attempts] + [math.inf]
    out: list[Segment] = []
    for i, attempt in enumerate(attempts):
        inside = _window(records, starts[i], starts[i + 1])
        begun = next((r for r in inside if r.get("kind") == "event" and r.get("event") in ("start", "resume")),
                     None)
        end = _ending(attempt, i == len(attempts) - 1, running, scheduler)
        out.append(Segment(
            number=attempt.number, cause=end.get("cause") if end else None,
            first_step=begun.get("step") if begun else None, last_step=_last_step(attempt, inside),
            steps_lost=None, started=_iso((attempt.start or {}).get("time")),
            ended=_iso(end.get("time")) if end else None, host=end.get("host") if end else None,
            detail=(end or {}).get("detail", "running"), action=(end or {}).get("action"),
            reason=(end or {}).get("reason", ""), scheduler_id=(attempt.start or {}).get("scheduler_id"),
            shape=(attempt.start or {}).get("shape"),
            resumed_from=begun.get("path") if begun and begun.get("event") == "resume" else None,
            skipped=list(begun.get("skipped") or []) if begun else []))
    return _with_steps_lost(out, records)


def _with_steps_lost(segments: list[Segment], records: list[dict]) -> list[Segment]:
    """Steps each ended segment trained after the checkpoint the job went on from."""
    checkpoints = [r["step"] for r in records if r.get("kind") == "event" and r.get("event") == "checkpoint"]
    out = []
    for i, seg in enumerate(segments):
        lost = None
        after = segments[i + 1] if i + 1 < len(segments) else None
        if seg.cause == Cause.COMPLETED.value:
            lost = 0
        elif seg.cause is not None and seg.last_step is not None:
            if after is not None and after.first_step is not None:
                kept = after.first_step
            else:
                kept = max((c for c in checkpoints if c <= seg.last_step), default=0)
            lost = max(0, seg.last_step - kept)
        out.append(Segment(**{**asdict(seg), "steps_lost": lost}))
    return out
