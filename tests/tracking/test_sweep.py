"""`larsctl sweep --track`: every point's job gets its own tracker run, all of them in the sweep's
experiment (MLflow) or group (W&B), told apart by batch, LR and optimizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from larsctl.jobs.sweep_grid import SweepDefinition
from larsctl.jobs.sweeps import plan
from tests.tracking.helpers import QUIET
from trainer.tracking import TrackingSettings
from trainer.tracking.state import RunInfo

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "jobs" / "digits-sweep.yaml")


def definition(tracking: dict | None) -> SweepDefinition:
    return SweepDefinition(cluster="local", recipe=RECIPE, target="val/accuracy>=0.9", batches=[16, 32],
                           optimizers=["sgd"], lrs=[0.5], lr_rules=None, lr_factors=[1.0], seeds=1,
                           eval_examples=64, max_steps=2, tracking=tracking)


def test_every_point_gets_the_sweeps_tracker_with_absolute_paths(larsctl_dirs, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    planned = plan(definition({"backend": "mlflow", "uri": "~/mlruns"}))
    assert [p.spec.tracking for p in planned] == [
        TrackingSettings(backend="mlflow", uri=str(tmp_path / "mlruns"))] * 2
    assert all(p.spec.tracking is None for p in plan(definition(None)))  # the recipe has none
    # A definition stored before --track existed reads as "the recipe's".
    stored = definition(None).to_dict()
    del stored["tracking"]
    assert SweepDefinition.from_dict(stored).tracking is None


@pytest.mark.slow
def test_a_tracked_sweep_is_one_mlflow_experiment_with_one_run_per_job(jobs, monkeypatch, tmp_path):
    store = tmp_path / "mlruns"
    sweep_id = jobs.larsctl("sweep", "--cluster", "local", "--recipe", RECIPE, "--batches", "16,32", "--lrs", "0.5",
                            "--optimizers", "sgd", "--target", "val/accuracy>=0.9", "--max-steps", "2",
                            "--parallel", "1", "--track", f"mlflow:{store}").stdout.strip()
    rows = json.loads(jobs.larsctl("jobs", "--sweep", sweep_id, "--json").stdout)
    jobs.larsctl("cancel", *[row["id"] for row in rows])  # the runs are created at submit: nothing to train for
    for key, value in QUIET.items():
        monkeypatch.setenv(key, value)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(sweep_id)
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(row["id"] for row in rows) and len(runs) == 2
    for row in rows:
        run, info = runs[row["id"]], RunInfo.read(row["job_dir"])
        assert (info.run_id, info.group, info.experiment) == (run.info.run_id, sweep_id, sweep_id)
        assert run.data.tags["sweep"] == sweep_id and run.data.tags["optimizer"] == "sgd"
        assert run.data.tags["lr"] == "0.5"
    assert sorted(run.data.tags["batch"] for run in runs.values()) == ["16", "32"]
