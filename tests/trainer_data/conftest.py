"""The digits data set at 32 px, built once per session under the shared LARSCTL_DATA dir."""
from __future__ import annotations

import pytest

from trainer.data import materialise_digits

IMAGE_SIZE = 32


@pytest.fixture(scope="session")
def digits(shared_data_dir):
    return materialise_digits(shared_data_dir, IMAGE_SIZE)
