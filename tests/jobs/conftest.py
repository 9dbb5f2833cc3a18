"""Fixtures for the job tests (the helpers themselves are in tests/jobs/helpers.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs.helpers import (DEMO, LARSCTL, SHORT, events, larsctl, pid_of, status, step, wait_for,
                                write_profile)


@pytest.fixture
def ddp_profile(larsctl_dirs) -> str:
    """The local profile with the ddp engine (torchrun) instead of horovodrun."""
    write_profile(larsctl_dirs["config"], "localddp", engine="ddp")
    return "localddp"


@pytest.fixture(autouse=True)
def _cancel_leftovers(larsctl_dirs):
    """A failing test must not leave training processes eating the 2 cores."""
    yield
    db = larsctl_dirs["home"] / "jobs.sqlite"
    if db.exists():
        for row in json.loads(larsctl("jobs", "--json", check=False).stdout or "[]"):
            if row["scheduler_ids"] and row["state"] in ("PENDING", "RUNNING", "REQUEUED"):
                larsctl("cancel", row["id"], check=False)


class Helpers:
    """The helpers above, handed to tests as the ``jobs`` fixture (importlib mode has no conftest imports)."""

    DEMO, SHORT, LARSCTL = DEMO, SHORT, LARSCTL
    larsctl = staticmethod(larsctl)
    status = staticmethod(status)
    wait_for = staticmethod(wait_for)
    step = staticmethod(step)
    events = staticmethod(events)
    write_profile = staticmethod(write_profile)
    pid_of = staticmethod(pid_of)


@pytest.fixture
def jobs() -> Helpers:
    return Helpers()


@pytest.fixture
def slurm_profile(slurm_cluster, larsctl_dirs, jobs, tmp_path):
    """A factory: a Slurm profile for the test cluster (2 CPU ranks on its one node)."""

    def make(name="testslurm", **fields):
        jobs.write_profile(larsctl_dirs["config"], name, **{
            "scheduler": "slurm", "partition": "debug", "cpus_per_node": 4, "mpi": "srun-pmix",
            "engine": "horovod", "walltime": "00:10:00", "signal_margin": 30,
            "venv": str(Path(__file__).resolve().parents[2] / ".venv"), "workdir": str(tmp_path / "runs"), **fields})
        return name

    return make
