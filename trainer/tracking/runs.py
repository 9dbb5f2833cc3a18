"""What is done to a job's tracker run outside its training: create it (at submit), attach a
file to it (the report's figure), and send what it does not have yet (``sync``).

larsctl calls the first two from the login node; ``python -m trainer.tracking sync JOB_DIR``
is the third, for a job whose last segment ended while its tracker was down.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from trainer import outputs
from trainer.tracking import TrackingSettings
from trainer.tracking.sender import Tracker, make_backend, read_job_document
from trainer.tracking.state import RunInfo, identity


def create_run(job_dir: Path, settings: TrackingSettings, doc: Mapping[str, Any], group: str | None = None,
               warn: Callable[[str], None] = print) -> RunInfo:
    """Write the job's run.json and create its run.  When the tracker cannot be reached, the run.json
    without an id is written all the same (the first segment that reaches the tracker creates the
    run) and ``warn`` says why; a missing library raises ImportError."""
    info = identity(doc, settings.backend, Path(job_dir).name, settings.experiment, group)
    backend = make_backend(settings, job_dir)
    try:
        info = backend.create(info)
    except Exception as exc:  # noqa: BLE001 - whatever the library raises for an unreachable tracker
        warn(f"{settings.describe()} did not answer ({' '.join(str(exc).split())[:200]}); the job's first "
             "segment that reaches it creates its run")
    info.write(job_dir)
    return info


def attach(job_dir: Path, path: Path) -> str | None:
    """Attach ``path`` to the job's run; the reason when it could not (no tracking: None and nothing done)."""
    doc = read_job_document(Path(job_dir) / "job.yaml") or {}
    info = RunInfo.read(job_dir)
    if not doc.get("tracking") or info is None or info.run_id is None:
        return None if not doc.get("tracking") else "its tracker run was not created yet"
    settings = TrackingSettings.from_dict(doc["tracking"])
    try:
        backend = make_backend(settings, Path(job_dir))
        backend.open(info, resume=False)
        backend.artifact(Path(path))
        backend.close(None)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        return f"{settings.describe()}: {' '.join(str(exc).split())[:200]}"
    return ""


def sync(job_dir: Path, say: Callable[[str], None] = print) -> bool:
    """Send everything the job's run does not have yet, and tag every segment; whether it all went."""
    job_dir = Path(job_dir)
    doc = read_job_document(job_dir / "job.yaml")
    if not doc or not doc.get("tracking"):
        say(f"{job_dir}: its job.yaml has no tracking: section; nothing to send")
        return True
    settings = TrackingSettings.from_dict(doc["tracking"], f"{job_dir / 'job.yaml'}: tracking")
    tracker = Tracker(settings, job_dir, doc, boundary=_last_start(job_dir / outputs.METRICS_FILE), say=say)
    ok = tracker.attempt(final=True)
    if ok:
        through = f"through step {tracker.durable[0]}" if tracker.durable else "no metrics yet"
        say(f"{settings.describe()}: run {tracker.info.run_id} has the metrics {through} "
            f"({tracker.sent_points} sent now)")
    return ok


def _last_start(metrics: Path) -> int:
    """Where the last segment's lines begin in metrics.jsonl: its events are taken as that segment's own."""
    import json

    boundary, offset = 0, 0
    try:
        with open(metrics, "rb") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict) and record.get("event") in ("start", "resume"):
                    boundary = offset
                offset += len(line)
    except OSError:
        pass
    return boundary
