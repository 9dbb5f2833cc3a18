"""Fixtures of the tracking tests: a real MLflow server; and the job tests' own (their ``jobs`` helpers,
the ``localddp`` profile, and no job left running after a test)."""
from __future__ import annotations

import pytest

from tests.jobs.conftest import _cancel_leftovers, ddp_profile, jobs  # noqa: F401 - fixtures, used by name
from tests.tracking.helpers import MlflowServer


@pytest.fixture
def mlflow_server(tmp_path):
    """A started MLflow server (SQLite backend) that the test may stop and start again."""
    root = tmp_path / "mlflow-server"
    root.mkdir()
    server = MlflowServer(root).start()
    yield server
    server.stop()
