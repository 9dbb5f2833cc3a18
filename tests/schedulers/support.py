"""Helpers shared by tests/schedulers and tests/slurm (loaded by path from their conftests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from larsctl.config.profiles import load_profile
from larsctl.planning.spec import resolve_job

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FAKE_TRAINER = HERE / "fake_trainer"
PROFILES = HERE / "profiles"
GOLDEN = HERE / "golden"
JOB_ID = "20260101-000000-demo"


def local_profile(**update):
    """The shipped local profile, re-targeted (e.g. scheduler="slurm", mpi="openmpi")."""
    return load_profile("local").model_copy(update={"python": sys.executable, **update})


def make_spec(profile, recipe: str = "jobs/demo.yaml", **overrides):
    return resolve_job(profile, REPO / recipe, **overrides)


def big_spec(profile):
    """Two nodes' worth of GPUs (multi-node launch lines), two epochs of the 4k recipe."""
    gpus = min(profile.max_gpus, 2 * profile.gpus_per_node)
    return resolve_job(profile, REPO / "jobs/resnet50-lars-4k.yaml", gpus=gpus, epochs=2)


def shellcheck(text: str) -> str:
    """shellcheck's complaints about a script ('' when it passes)."""
    r = subprocess.run(["shellcheck", "-s", "bash", "-"], input=text, capture_output=True, text=True,
                       timeout=60)
    return "" if r.returncode == 0 else r.stdout + r.stderr


def job_dir(base: Path, name: str = "job dir") -> Path:
    d = base / name
    (d / "logs").mkdir(parents=True)
    return d


def fake_env(**extra) -> dict[str, str]:
    """Environment for running scripts whose trainer is the fake one."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(FAKE_TRAINER)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def rank_notes(directory: Path) -> dict[str, list[str]]:
    return {p.stem: p.read_text().splitlines() for p in sorted(Path(directory).glob("rank*.txt"))}
