"""MLflow: one run per job, through ``MlflowClient`` with the run id (no global active run).

A tracking URI without a scheme is a local directory: its ``mlflow.db`` (SQLite, MLflow's
own replacement for the file store it no longer opens) and ``artifacts/``; see it with
``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db``.  A point is sent with the
time of its metrics.jsonl record, so sending it again (a batch whose answer was lost) adds
nothing: MLflow keeps one row per (key, timestamp, step, value).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from trainer.tracking import TrackingSettings
from trainer.tracking.feed import Point
from trainer.tracking.state import Key, RunInfo

# MLflow's limits per log_batch call.
MAX_METRICS, MAX_TAGS, MAX_PARAMS = 1000, 100, 100
# Fail fast and let the tracker's own back-off retry (MLflow's default: 7 retries over minutes);
# no usage reports from compute nodes.
ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
               "MLFLOW_DISABLE_TELEMETRY": "true"}
STATUS = {"completed": "FINISHED", "cancelled": "KILLED", "diverged": "FAILED"}


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class MlflowBackend:
    """What the tracker asks of MLflow.  Everything the server acknowledged is durable."""

    durable_on_ack = True

    def __init__(self, settings: TrackingSettings):
        for key, value in ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow import MlflowClient

        self.settings = settings
        self.local = Path(settings.local_dir) if settings.local_dir else None
        uri = settings.uri
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{self.local / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id: str | None = None

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (self.local / "artifacts").as_uri() if self.local is not None else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another job created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def create(self, info: RunInfo) -> RunInfo:
        """A new run in the job's experiment, with the plan as its parameters."""
        from mlflow.entities import Param

        experiment_id = self._experiment_id(info.experiment)
        run = self.client.create_run(experiment_id, run_name=info.name, tags=info.tags)
        params = [Param(k, str(v)) for k, v in sorted(info.params.items())]
        for chunk in _chunks(params, MAX_PARAMS):
            self.client.log_batch(run.info.run_id, params=chunk)
        return info.with_run(run.info.run_id, experiment_id)

    def open(self, info: RunInfo, resume: bool = True) -> None:
        """Log to the run from now on; ``resume``: mark it RUNNING again (a segment starts)."""
        self.run_id = info.run_id
        if resume and self.client.get_run(info.run_id).info.status != "RUNNING":
            self.client.update_run(info.run_id, status="RUNNING")

    def send(self, points: list[Point], tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        metrics = [Metric(name, value, int(p.time * 1000), p.step) for p in points
                   for name, value in p.values.items()]
        for chunk in _chunks(metrics, MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk)
        for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], MAX_TAGS):
            self.client.log_batch(self.run_id, tags=chunk)

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, ending: str | None) -> None:
        """The run's status after this segment: a preempted job (or one that ended without saying)
        stays RUNNING, it comes back."""
        if ending in STATUS:
            self.client.set_terminated(self.run_id, STATUS[ending])

    def abandon(self) -> None:
        """After a failure: drop the database connections MLflow pools for a local store (the client and
        its store are cached per URI), so that the next round starts on new ones."""
        engine = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        engine = getattr(engine, "engine", None)
        if engine is not None:
            engine.dispose()

    def durable(self, acknowledged: Key | None) -> Key | None:
        return acknowledged
