"""Rank 0's side thread that sends metrics.jsonl to the job's tracker run.

The training loop does nothing for it but wake it (:meth:`Tracker.poke`) when the metrics
logger writes a line.  The thread sends at most every :data:`MIN_INTERVAL_S`, from the
last point the tracker durably has (tracking/sent.json, or W&B's run files read back) in
file order, skipping points at or below it: steps trained again after a resume from an
older checkpoint are not sent twice.  Any error (an unreachable server, a full disk, a bug
in a library) is one warning; the values wait in metrics.jsonl and the thread tries again
after a back-off, from a fresh connection, and says when the tracker answers again.  At the
segment's end :meth:`Tracker.close` sends the rest, tags how the segment ended, attaches the
final checkpoint's manifest when the run completed and sets the run's status, within
:data:`CLOSE_TIMEOUT_S`: what is left over goes with the next segment, or with
``python -m trainer.tracking sync JOB_DIR``.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from trainer import outputs
from trainer.supervisor.records import current_attempt
from trainer.tracking import TrackingError, TrackingSettings
from trainer.tracking.feed import ENDINGS, MetricsFeed, Point, point_of, recorded_segments, segment_tags, shape_text
from trainer.tracking.state import Key, RunInfo, identity, read_sent, write_sent

MIN_INTERVAL_S = 2.0
CLOSE_TIMEOUT_S = 20.0
BACKOFF_S = (2.0, 60.0)  # first retry, longest wait


def make_backend(settings: TrackingSettings, job_dir: Path):
    """The backend object for ``settings`` (imports its library: ImportError when it is missing)."""
    if settings.backend == "mlflow":
        from trainer.tracking.mlflow_backend import MlflowBackend

        return MlflowBackend(settings)
    from trainer.tracking.wandb_backend import WandbBackend

    return WandbBackend(settings, job_dir)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Tracker:
    """Sends one job directory's metrics to its tracker run.  ``boundary``: the size metrics.jsonl had
    when this segment started; the events after it are this segment's own."""

    def __init__(self, settings: TrackingSettings, job_dir: Path | str, doc: Mapping[str, Any],
                 boundary: int, say: Callable[[str], None] | None = None):
        self.settings, self.job_dir, self.doc = settings, Path(job_dir), doc
        self.boundary = boundary
        self.say = say or (lambda text: print(f"trainer: {text}", file=sys.stderr, flush=True))
        self.backend = None
        self.info: RunInfo | None = None
        self.sent_points = 0
        self.ending: str | None = None
        self._own: dict[str, Any] = {}
        self._wake, self._closing = threading.Event(), threading.Event()
        self._down_since: float | None = None
        self._retry_at, self._backoff = 0.0, BACKOFF_S[0]
        self._disabled = False
        self._thread = threading.Thread(target=self._loop, name="tracker", daemon=True)

    # -- the training side ----------------------------------------------------------------
    def start(self) -> Tracker:
        self._thread.start()
        return self

    def poke(self) -> None:
        """A new metrics line is there (cheap: sets an event)."""
        self._wake.set()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.say(f"warning: {self.settings.describe()} still busy after {timeout:g} s; the values it "
                     "does not have yet go with the next segment (or `python -m trainer.tracking sync "
                     f"{self.job_dir}`)")

    def _loop(self) -> None:
        while not self._disabled:
            # Down: wake at the retry time even if no new line comes (the values held must go then).
            down = self._down_since is not None
            self._wake.wait(max(0.0, self._retry_at - time.monotonic()) if down else None)
            self._wake.clear()
            final = self._closing.is_set()
            if final or time.monotonic() >= self._retry_at:
                self.attempt(final)
            if final:
                return
            self._closing.wait(MIN_INTERVAL_S)  # at most one send per interval; a close cuts it short

    # -- one round --------------------------------------------------------------------------
    def attempt(self, final: bool) -> bool:
        """Send what is new (and at the segment's end, finish it); False when the tracker failed."""
        try:
            for _ in range(2 if final else 1):  # a second round when W&B's files lost some at the end
                if self.backend is None:
                    self._open()
                self._read()
                self._send()
                if not final or self._finish():
                    break
        except ImportError as exc:
            self._disabled = True
            self.say(f"warning: tracking off for this segment: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - the tracker never stops training
            self._failed(exc)
            return False
        self._answered()
        return True

    def _open(self) -> None:
        info = RunInfo.read(self.job_dir)
        if info is None:
            info = identity(self.doc, self.settings.backend, self.job_dir.name, self.settings.experiment)
            info.write(self.job_dir)
        backend = make_backend(self.settings, self.job_dir)
        if info.run_id is None:  # submit could not create it
            info = backend.create(info)
            info.write(self.job_dir)
        backend.open(info)
        self.backend, self.info = backend, info
        self.durable = backend.durable(read_sent(self.job_dir))
        self.last: Key | None = self.durable
        self.feed = MetricsFeed(self.job_dir / outputs.METRICS_FILE)
        self.pending: list[Point] = []
        self.tags_sent: dict[str, str] = {}
        self._own = {"starts_before": 0}
        self._tags_due = True

    def _read(self) -> None:
        for end, record in self.feed.read():
            point = point_of(record)
            if point is not None:
                if self.last is None or point.key > self.last:
                    self.pending.append(point)
                    self.last = point.key
            elif record.get("kind") == "event":
                self._event(record, own=end > self.boundary)

    def _event(self, record: dict, own: bool) -> None:
        event = record.get("event")
        self._tags_due = self._tags_due or own and event != "checkpoint"
        if event in ("checkpoint", "resume") and record.get("path"):
            # The newest checkpoint, whichever segment wrote it: one resumed at its last step writes none.
            self._own["checkpoint"] = record["path"]
        if event in ("start", "resume"):
            if own:
                self._own.update(first_step=record.get("step"), shape=shape_text(record.get("shape")))
            else:
                self._own["starts_before"] += 1
        elif own and event in ENDINGS:
            self.ending = ENDINGS[event]

    def _segment(self) -> int:
        """This segment's number: the job's segment record, or the trainer runs before it in metrics.jsonl."""
        attempt = current_attempt(self.job_dir)
        return attempt.number if attempt is not None else self._own["starts_before"]

    def _tags(self) -> dict[str, str]:
        segments = recorded_segments(self.job_dir)
        mine = segments.setdefault(self._segment(), {})
        for key in ("shape", "first_step"):
            if self._own.get(key) is not None:
                mine.setdefault(key, str(self._own[key]))
        if self.ending:
            mine["cause"] = self.ending
        tags = segment_tags(segments)
        return {k: v for k, v in tags.items() if self.tags_sent.get(k) != v}

    def _send(self) -> None:
        tags = self._tags() if self._tags_due else {}
        if not self.pending and not tags:
            return
        self.backend.send(self.pending, tags)
        self.tags_sent.update(tags)
        self._tags_due = False
        self.sent_points += len(self.pending)
        if self.pending and self.backend.durable_on_ack:
            self.durable = self.pending[-1].key
            write_sent(self.job_dir, self.durable)
        self.pending = []

    def _finish(self) -> bool:
        """Attach the manifest of a completed run's final checkpoint, set the run's status, and find out
        what the tracker durably has; False when that is less than was sent (try once more)."""
        manifest = Path(f"{self._own['checkpoint']}.sha256") if self._own.get("checkpoint") else None
        if self.ending == "completed" and manifest is not None and manifest.is_file():
            self.backend.artifact(manifest)
        backend, self.backend = self.backend, None
        backend.close(self.ending)
        self.durable = backend.durable(self.durable)
        if self.durable is not None:
            write_sent(self.job_dir, self.durable)
        return self.last is None or (self.durable is not None and self.durable >= self.last)

    # -- failures ---------------------------------------------------------------------------
    def _failed(self, exc: Exception) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:  # the next round starts over: a new backend, client and connections
            try:
                backend.abandon()
            except Exception:  # noqa: BLE001 - it is already failing
                pass
        if self._down_since is None:
            self._down_since = time.time()
            self.say(f"warning: {self.settings.describe()} failed: {_one_line(exc)}; training goes on, "
                     "the metrics wait and are sent when it answers again")
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(BACKOFF_S[1], self._backoff * 2)

    def _answered(self) -> None:
        if self._down_since is not None:
            since = time.strftime("%H:%M:%S", time.localtime(self._down_since))
            self.say(f"{self.settings.describe()} answers again: sent the metrics held since {since}")
        self._down_since, self._backoff = None, BACKOFF_S[0]


def read_job_document(config: str | Path) -> dict | None:
    """The job.yaml a trainer was started with (None when ``config`` is not a readable mapping)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(config).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def start_tracker(config: str | Path, out_dir: str | Path) -> Tracker | None:
    """Rank 0's tracker for a job whose job.yaml has a ``tracking:`` section; None without one.
    Never raises: a section that does not parse is one warning."""
    doc = read_job_document(config) if Path(config).is_file() else None
    if not doc or not doc.get("tracking"):
        return None
    try:
        settings = TrackingSettings.from_dict(doc["tracking"], f"{config}: tracking")
    except TrackingError as exc:
        print(f"trainer: warning: tracking off: {exc}", file=sys.stderr, flush=True)
        return None
    metrics = Path(out_dir) / outputs.METRICS_FILE
    boundary = metrics.stat().st_size if metrics.exists() else 0
    return Tracker(settings, out_dir, doc, boundary).start()
