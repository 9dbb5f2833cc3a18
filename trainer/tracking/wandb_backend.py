"""Weights & Biases: one run id per job; each segment opens it again (``wandb.init(id=...)``).

Offline (the default), every segment writes its own run directory
``<dir>/wandb/offline-run-<time>-<id>/``; ``wandb sync`` uploads them in order, as one run.
Online, the run is resumed (``resume="allow"``) and W&B streams it.

What W&B has is what its run files hold: wandb-core buffers its transaction log and writes
it out in blocks, at the latest when the run finishes, and a full disk makes it drop
records without a word to the caller.  So the tracker counts a point as sent only once it
reads it back from those files with W&B's own reader (``wandb.sdk.internal.datastore``):
after each segment's finish, and when it opens the run again.  It also will not write into
a directory with less than :data:`MIN_FREE_BYTES` free.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import string
from pathlib import Path

from trainer.tracking import TrackingSettings
from trainer.tracking.feed import Point
from trainer.tracking.state import ORDER, Key, RunInfo, tracking_dir

MIN_FREE_BYTES = 8 << 20
ID_ALPHABET = string.ascii_lowercase + string.digits
ENVIRONMENT = {"WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}


class NoSpace(OSError):
    """Less than MIN_FREE_BYTES free where W&B writes."""


def run_files(directory: Path, run_id: str) -> list[Path]:
    """Every run file W&B wrote for ``run_id`` under ``directory`` (offline and online), oldest first."""
    return sorted(Path(directory).glob(f"wandb/*-{run_id}/run-{run_id}.wandb"))


def logged_steps(path: Path) -> list[int]:
    """The steps of the history rows in one W&B run file, read with W&B's own reader; a torn end
    (a segment killed, a full disk) ends the file."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    steps: list[int] = []
    store = datastore.DataStore()
    try:
        store.open_for_scan(str(path))
        while (data := store.scan_data()) is not None:
            record = pb.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                steps += [int(json.loads(i.value_json)) for i in record.history.item
                          if (i.key or "/".join(i.nested_key)) == "_step"]
    except Exception:  # noqa: BLE001 - anything unreadable is the end of what W&B has
        pass
    finally:
        store.close()
    return steps


class WandbBackend:
    """What the tracker asks of W&B.  A point is durable once it is in W&B's run files."""

    durable_on_ack = False

    def __init__(self, settings: TrackingSettings, job_dir: Path):
        for key, value in ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        import wandb

        self.wandb = wandb
        self.settings = settings
        self.dir = Path(settings.dir) if settings.dir else tracking_dir(job_dir)
        self.run = None
        self.run_id: str | None = None

    def create(self, info: RunInfo) -> RunInfo:
        """W&B runs are created by their first ``init``: the id alone is enough (nothing is contacted)."""
        return info.with_run("".join(secrets.choice(ID_ALPHABET) for _ in range(8)))

    def _check_space(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        stat = os.statvfs(self.dir)
        free = stat.f_bavail * stat.f_frsize
        if free < MIN_FREE_BYTES:
            raise NoSpace(f"{self.dir} has {free // 1024} KiB free (W&B needs {MIN_FREE_BYTES >> 20} MiB)")

    def open(self, info: RunInfo, resume: bool = True) -> None:
        """A new run directory for the run (``resume`` changes nothing here: W&B resumes by id)."""
        self._check_space()
        wandb, online = self.wandb, not self.settings.offline
        self.run_id = info.run_id
        self.run = wandb.init(
            id=info.run_id, project=info.experiment, entity=self.settings.entity, group=info.group,
            name=info.name, dir=str(self.dir), mode="online" if online else "offline",
            resume="allow" if online else None, config=info.params,
            tags=[f"{k}:{v}" for k, v in info.tags.items()],
            settings=wandb.Settings(console="off", save_code=False, disable_git=True, x_disable_stats=True,
                                    silent=True))

    def send(self, points: list[Point], tags: dict[str, str]) -> None:
        self._check_space()
        rows: dict[int, dict] = {}
        for p in points:  # a step's train and val values in one row
            rows.setdefault(p.step, {}).update(p.values)
        for step, values in rows.items():
            self.run.log(values, step=step)
        if tags:
            self.run.summary.update(tags)

    def artifact(self, path: Path) -> None:
        """A copy of ``path`` in the run's files (offline, W&B only links a file until ``wandb sync``:
        the copy outlives a pruned checkpoint or a moved figure)."""
        self._check_space()
        kept = self.dir / "artifacts" / path.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, kept)
        self.run.save(str(kept), base_path=str(kept.parent), policy="now")

    def close(self, ending: str | None) -> None:
        """Finish the run's directory, and stop W&B's service process (left running, it holds the
        rank's output pipes open and the launcher waits for it)."""
        run, self.run = self.run, None
        if run is not None:
            run.finish(exit_code=0 if ending in (None, "completed", "preempted") else 1)
        self.wandb.teardown()

    def abandon(self) -> None:
        """After a failure: finish what W&B has and stop its service; the next round starts a new one."""
        self.close(None)

    def durable(self, acknowledged: Key | None) -> Key | None:
        """The last step W&B's run files hold (``acknowledged`` is not proof of anything here)."""
        steps = [s for path in run_files(self.dir, self.run_id) for s in logged_steps(path)]
        return (max(steps), max(ORDER.values())) if steps else None
