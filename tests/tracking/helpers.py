"""The real trackers for the tracking tests: an MLflow server the test starts (SQLite backend), and
W&B's offline run files read back with W&B's own reader."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MLFLOW = Path(sys.executable).parent / "mlflow"
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with its store in ``root``; stop() and start() again keep the store
    and the port (a server that goes away and comes back)."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> MlflowServer:
        argv = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1"]
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **QUIET}, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited {self.proc.returncode}:\n"
                                     f"{(self.root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server not up after {timeout} s")

    def stop(self) -> None:
        """The server goes away (its whole process group: uvicorn and its workers)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.proc = None

    def client(self):
        for key, value in QUIET.items():
            os.environ.setdefault(key, value)
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url)


def metric_steps(client, run_id: str, key: str) -> list[int]:
    """The steps of a metric's history, in the order the tracker received them (timestamps)."""
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))
    return [m.step for m in history]


# -- W&B's own reader ---------------------------------------------------------------------------
def wandb_records(directory: Path, run_id: str) -> list[tuple[str, str, object]]:
    """Every record of every W&B run directory of ``run_id`` under ``directory``, oldest directory
    first, read with wandb.sdk.internal.datastore: (directory name, record type, record)."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    out = []
    for path in sorted(Path(directory).glob(f"wandb/*-{run_id}/run-{run_id}.wandb")):
        store = datastore.DataStore()
        store.open_for_scan(str(path))
        try:
            while (data := store.scan_data()) is not None:
                record = pb.Record()
                record.ParseFromString(data)
                out.append((path.parent.name, record.WhichOneof("record_type"), record))
        except AssertionError:  # a torn end: what W&B itself stops at
            pass
        finally:
            store.close()
    return out


def wandb_history(records) -> list[dict]:
    """The history rows (with ``_step``), in file order."""
    rows = []
    for _, kind, record in records:
        if kind == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return rows


def wandb_summary(records) -> dict:
    """The summary as the updates leave it."""
    summary: dict = {}
    for _, kind, record in records:
        if kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


def first_values(metrics: Path, kind: str, field: str) -> dict[int, float]:
    """What metrics.jsonl says at each step, first occurrence (replayed steps come later)."""
    out: dict[int, float] = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == kind and record["step"] not in out:
            out[record["step"]] = record[field]
    return out
