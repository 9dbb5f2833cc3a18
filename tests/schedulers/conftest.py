"""Fixtures for scheduler tests: the shared helpers as `support`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("larsctl_test_support", Path(__file__).with_name("support.py"))
support_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support_mod)


@pytest.fixture
def support():
    return support_mod
