"""launch_needs: what a launch line needs, read off the line build_launch writes (table-driven)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from larsctl.config.profiles import read_profile
from larsctl.schedulers.launch import LaunchError, build_launch, launch_needs

REPO = Path(__file__).resolve().parents[2]


class Layout:
    def __init__(self, nodes: int, gpus_per_node: int):
        self.nodes, self.gpus_per_node, self.gpus = nodes, gpus_per_node, nodes * gpus_per_node


@pytest.mark.parametrize("path, nodes, needs", [
    ("clusters/local.yaml", 1, {"horovodrun", "gloo"}),
    ("clusters/slurm-v100.yaml", 2, {"mpirun", "mpi", "nccl"}),
    ("clusters/pbs-v100.yaml", 2, {"mpirun", "singularity", "mpi", "nccl"}),
    # Cray MPICH under plain srun: srun starts every rank, Horovod talks MPI.
    ("clusters/slurm-p100.yaml", 2, {"srun", "mpi", "nccl"}),
    ("tests/schedulers/profiles/slurm-v100-openmpi.yaml", 2, {"mpirun", "mpi", "nccl"}),
    ("tests/schedulers/profiles/pbs-a100-mpich.yaml", 2, {"mpiexec", "mpi", "nccl"}),
    ("tests/schedulers/profiles/slurm-a100-pmix-apptainer.yaml", 2, {"srun", "pmix", "apptainer", "mpi", "nccl"}),
    ("tests/schedulers/profiles/pbs-v100-gloo.yaml", 2, {"horovodrun", "ssh", "gloo", "nccl"}),
    ("tests/schedulers/profiles/pbs-v100-gloo.yaml", 1, {"horovodrun", "gloo", "nccl"}),
    ("tests/schedulers/profiles/slurm-h100-ddp.yaml", 2, {"srun", "torchrun", "nccl"}),
    ("tests/schedulers/profiles/slurm-h100-ddp.yaml", 1, {"torchrun", "nccl"}),
])
def test_needs_per_profile(path, nodes, needs):
    profile = read_profile(REPO / path)
    plan = Layout(nodes, profile.gpus_per_node)
    assert launch_needs(profile, plan) == needs
    # The launcher named is the one the line starts with (after any container prefix).
    words = shlex.split(build_launch(profile, plan, "/w").line)
    starts = {"mpirun", "mpiexec", "srun"} & needs
    assert not starts or words[0] in starts


def test_ddp_on_cpus_talks_gloo_and_no_line_means_launch_error():
    profile = read_profile(REPO / "clusters" / "local.yaml").model_copy(update={"engine": "ddp"})
    assert launch_needs(profile, Layout(1, 2)) == {"torchrun", "gloo"}
    pbs_srun = profile.model_copy(update={"scheduler": "pbs", "mpi": "srun", "engine": "horovod"})
    with pytest.raises(LaunchError, match="needs scheduler slurm"):
        launch_needs(pbs_srun, Layout(1, 2))
