"""Suite-wide isolation: every test gets its own larsctl home, config and data dirs.

The digits data set is cached once per session (building it costs seconds) and
shared read-only through LARSCTL_DATA.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `from tests.trainer.helpers import ...` under --import-mode=importlib
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("larsctl-data")


@pytest.fixture(autouse=True)
def larsctl_dirs(tmp_path, shared_data_dir, monkeypatch) -> dict[str, Path]:
    home = tmp_path / "larsctl-home"
    config = tmp_path / "larsctl-config"
    home.mkdir()
    config.mkdir()
    monkeypatch.setenv("LARSCTL_HOME", str(home))
    monkeypatch.setenv("LARSCTL_CONFIG_DIR", str(config))
    monkeypatch.setenv("LARSCTL_DATA", str(shared_data_dir))
    # Open MPI refuses root without these; harmless for other users.
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return {"home": home, "config": config, "data": shared_data_dir}


os.environ.setdefault("LARSCTL_REPO", str(REPO))


@pytest.fixture
def mount_tmpfs(tmp_path):
    """A factory: ``mount_tmpfs("128k")`` mounts a tmpfs of that size under tmp_path (a real
    file system that fills up); skipped where mounting is not permitted, unmounted afterwards."""
    import subprocess

    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs-{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in reversed(mounted):
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="session")
def horovod():
    """Horovod in the venv.  A failure, not a skip: CI builds Horovod (.ci/build-horovod.sh)
    and the engine must be tested."""
    if shutil.which("horovodrun", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("horovodrun is not in the venv: run .ci/setup.sh test (it builds Horovod)")
    return True

# The test Slurm (tests/slurm/cluster.py; test dirs are not packages, so by path).
_spec = importlib.util.spec_from_file_location("larsctl_test_slurm_cluster",
                                               Path(__file__).with_name("slurm") / "cluster.py")
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
        # One started by hand (cluster.py start DIR; export LARSCTL_TEST_SLURM_ROOT=DIR): share it.
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


