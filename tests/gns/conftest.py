"""Fixtures of the gradient noise scale tests (trainer/gns.py)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `from tests.trainer.helpers import ...` under --import-mode=importlib
    sys.path.insert(0, str(REPO))
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def horovod():
    # A failure, not a skip, like tests/trainer: CI builds Horovod and the engine must be tested.
    if shutil.which("horovodrun", path=str(VENV_BIN)) is None:
        pytest.fail("horovodrun is not in the venv: run .ci/setup.sh test (it builds Horovod)")
    return True
