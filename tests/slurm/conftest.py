"""The `slurm_cluster` fixture: one real single-node Slurm for the whole session.

Tests that use it are skipped only when Debian's Slurm/munge packages are missing
(and fail instead when CI is set: CI installs them, so they must run there).
Other test directories can reuse the cluster: load ``tests/slurm/cluster.py`` by
path (as below) and call ``TestSlurm(dir).start()`` / ``.stop()`` the same way.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("larsctl_test_slurm_cluster",
                                               Path(__file__).with_name("cluster.py"))
cluster_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster_mod)


_OWNER_VAR = "LARSCTL_TEST_SLURM_ROOT"  # one test Slurm per pytest process


@pytest.fixture(scope="session")
def slurm_cluster():
    """A started TestSlurm; SLURM_CONF points the Slurm commands at it for the session."""
    missing = cluster_mod.missing_tools()
    if missing or os.geteuid() != 0:
        why = f"missing {missing}" if missing else "needs root (munged, slurmd)"
        if os.environ.get("CI"):
            pytest.fail(f"test Slurm cannot start on CI: {why}")
        pytest.skip(f"test Slurm unavailable: {why}")
    running = os.environ.get(_OWNER_VAR)
    if running:
        # Another conftest (tests/jobs loads this fixture too) started one, or one started
        # by hand (cluster.py start DIR; export LARSCTL_TEST_SLURM_ROOT=DIR): share it.
        cluster = cluster_mod.TestSlurm(Path(running))
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
        return
    # Not under pytest's 0700 tmp dirs: munged runs as the munge user and must reach its socket.
    root = Path(tempfile.mkdtemp(prefix="larsctl-slurm-"))
    cluster = cluster_mod.TestSlurm(root)
    old = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        os.environ[_OWNER_VAR] = str(root)
        yield cluster
    finally:
        os.environ.pop(_OWNER_VAR, None)
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(root, ignore_errors=True)


_support_spec = importlib.util.spec_from_file_location(
    "larsctl_test_support", Path(__file__).resolve().parent.parent / "schedulers" / "support.py")
support_mod = importlib.util.module_from_spec(_support_spec)
_support_spec.loader.exec_module(support_mod)


@pytest.fixture
def support():
    """tests/schedulers/support.py: profiles, specs, the fake trainer."""
    return support_mod


@pytest.fixture
def fake_trainer_env(monkeypatch, support):
    """sbatch passes the submitter's environment on: make jobs run the fake trainer."""
    for key, value in support.fake_env().items():
        if key.startswith(("OMPI_", "PYTHONPATH")):
            monkeypatch.setenv(key, value)
    return monkeypatch
