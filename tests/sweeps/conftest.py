"""Fixtures for the sweep tests: the real `larsctl` executable (tests/jobs/helpers.py), and
the sweep arguments every test starts from (the digits study recipe, tiny)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs.helpers import larsctl

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "jobs" / "digits-sweep.yaml")
# Two batches of the digits study recipe at the linear rule's LR, to a modest accuracy, short.
BASE = ["sweep", "--cluster", "local", "--recipe", RECIPE, "--optimizers", "sgd", "--lr-rule", "linear",
        "--eval-examples", "64", "--max-steps", "40"]


@pytest.fixture(autouse=True)
def _cancel_leftovers(larsctl_dirs):
    """A failing test must not leave training processes eating the 2 cores."""
    yield
    if (larsctl_dirs["home"] / "jobs.sqlite").exists():
        for row in json.loads(larsctl("jobs", "--json", check=False).stdout or "[]"):
            if row["scheduler_ids"] and row["state"] in ("PENDING", "RUNNING", "REQUEUED"):
                larsctl("cancel", row["id"], check=False)


def written(home: Path) -> list[str]:
    """Every file under the larsctl home but the (possibly created, empty) job database."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and not p.name.startswith("jobs.sqlite"))
