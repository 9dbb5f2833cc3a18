"""Helpers for the planner tests: profiles written into the user config dir."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BASE_PROFILE = """\
name: {name}
scheduler: slurm
nodes: {nodes}
gpus_per_node: {gpus_per_node}
gpu_type: {gpu_type}
cpus_per_node: 40
interconnect_gbps: {gbps}
mpi: openmpi
engine: horovod
walltime: "{walltime}"
workdir: /scratch/larsctl
"""


@pytest.fixture
def user_profile(larsctl_dirs):
    """Write a profile into $LARSCTL_CONFIG_DIR/clusters and return its path."""
    clusters = larsctl_dirs["config"] / "clusters"
    clusters.mkdir(exist_ok=True)

    def write(name="test", nodes=4, gpus_per_node=4, gpu_type="V100-16GB", gbps=100,
              walltime="48:00:00", text=None, filename=None) -> Path:
        path = clusters / (filename or f"{name}.yaml")
        path.write_text(text if text is not None else BASE_PROFILE.format(
            name=name, nodes=nodes, gpus_per_node=gpus_per_node, gpu_type=gpu_type,
            gbps=gbps, walltime=walltime))
        return path

    return write


@pytest.fixture
def variant(tmp_path):
    """Write a YAML file from ``base`` lines, some replaced (by index), some appended."""

    def write(case: str, base: list[str], replaced: dict[int, str], appended: list[str]) -> Path:
        lines = list(base)
        for index, line in replaced.items():
            lines[index] = line
        path = tmp_path / f"{case}.yaml"
        path.write_text("\n".join(lines + appended) + "\n")
        return path

    return write
