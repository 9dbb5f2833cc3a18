"""Fixtures for the scheduler tests on the test Slurm.

The session-wide `slurm_cluster` fixture is in tests/conftest.py, so that every
test directory shares one real single-node Slurm per pytest run.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

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
