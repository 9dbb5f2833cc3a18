"""Suite-wide isolation: every test gets its own larsctl home, config and data dirs.

The digits data set is cached once per session (building it costs seconds) and
shared read-only through LARSCTL_DATA.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


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


REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("LARSCTL_REPO", str(REPO))
