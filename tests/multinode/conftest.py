"""The multi-node test cluster: a real 3-node Slurm in Linux namespaces on this machine.

``virtual_cluster`` (session) starts tests/multinode/cluster.py's VirtualCluster once
for the directory's tests and removes it afterwards (asserting nothing is left).
Jobs on the nodes see the machine's files at the same paths except below /tmp,
/dev/shm and /run, which are private per node; pytest's base temp directory (so
every ``tmp_path``, and the LARSCTL_HOME / job directories the suite's autouse
fixture puts there) is bound into every node at the same path.  A test that wants
job outputs back must keep them under ``tmp_path`` (or outside /tmp).

The Slurm clients stay in the root namespaces: ``virtual_cluster.env()`` (or the
``vc_env`` fixture, which exports it for one test) points them at the cluster,
without touching the single-node test Slurm of tests/slurm.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.jobs.helpers import write_profile

REPO = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("larsctl_test_multinode_cluster",
                                               Path(__file__).with_name("cluster.py"))
vc_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vc_mod)


@pytest.fixture(scope="session")
def vc():
    """tests/multinode/cluster.py as a module (test dirs are not packages)."""
    return vc_mod


@pytest.fixture(scope="session")
def virtual_cluster(tmp_path_factory):
    """A started 3-node VirtualCluster (nodes n1..n3, controller ctl), shared for the session."""
    reason = vc_mod.unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"multi-node test cluster cannot start on CI: {reason}")
        pytest.skip(f"multi-node test cluster unavailable: {reason}")
    # Not under pytest's 0700 dirs: the munge user must reach the key, socket dir and logs.
    root = Path(tempfile.mkdtemp(prefix="larsctl-vc-"))
    cluster = vc_mod.VirtualCluster(root, nodes=3, shared=[tmp_path_factory.getbasetemp()])
    try:
        cluster.start()
        cluster.check_isolated()
        yield cluster
    finally:
        cluster.stop()
        left = cluster.leftovers()
        if not left:
            shutil.rmtree(root, ignore_errors=True)
    assert not left, f"virtual cluster left behind (state kept in {root}): {left}"


@pytest.fixture
def vc_env(virtual_cluster, monkeypatch):
    """Export the cluster's client environment for one test (larsctl in-process, sbatch...)."""
    for key, value in virtual_cluster.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return virtual_cluster.env()


@pytest.fixture
def profile(virtual_cluster, vc_env, larsctl_dirs, tmp_path, vc):
    """A factory: a user profile for the virtual cluster (its nodes reach each other over eth0)."""

    def make(name: str, **fields) -> str:
        write_profile(larsctl_dirs["config"], name, **{
            "scheduler": "slurm", "nodes": 3, "gpus_per_node": 1, "cpus_per_node": virtual_cluster.cpus_per_node,
            "partition": vc.PARTITION, "walltime": "00:30:00", "signal_margin": 60, "network_interface": "eth0",
            "venv": str(REPO / ".venv"), "workdir": str(tmp_path / "runs"), **fields})
        return name

    return make
