"""Where this process sits in the job, read from the launcher's environment.

Like submitit's JobEnvironment: one pure function maps an environment mapping to
rank, world size, local rank and the rendezvous address, whichever launcher
started us.  Precedence: torchrun (RANK/WORLD_SIZE), Open MPI (OMPI_COMM_WORLD_*),
Slurm srun (SLURM_PROCID/SLURM_NTASKS), MPICH/Intel MPI hydra (PMI_RANK/PMI_SIZE),
else a single process.

MASTER_ADDR/MASTER_PORT (for torch.distributed) come from the environment when set.
Otherwise they are derived so that every rank computes the same values:
- address: 127.0.0.1 when all ranks are on one node; under Slurm the first host of
  SLURM_JOB_NODELIST (rank 0 runs there with srun's block distribution); under
  Open MPI the host of mpirun itself (OMPI_MCA_orte_hnp_uri), where rank 0 runs
  with the default by-slot mapping.  Set MASTER_ADDR when your mapping differs.
- port: 20000 + (job id mod 20000), the job id being SLURM_JOB_ID or Open MPI's job
  family, so two jobs sharing a node do not collide; 29500 otherwise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from trainer.errors import BadInput


@dataclass(frozen=True)
class JobEnvironment:
    launcher: str  # torchrun | openmpi | slurm | pmi | single
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list: 'gpu[07-09,12],cpu1' -> 'gpu07'."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise BadInput(f"environment: {name}={env[name]!r} is not an integer") from None


def detect(env: Mapping[str, str]) -> JobEnvironment:
    if "RANK" in env and "WORLD_SIZE" in env:
        launcher, rank, world = "torchrun", _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        local_world = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world
    elif "OMPI_COMM_WORLD_RANK" in env:
        launcher = "openmpi"
        rank, world = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
        local, local_world = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK"), _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE")
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        launcher, rank, world = "slurm", _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
        local_world = int(per_node) if per_node.isdigit() else world
    elif "PMI_RANK" in env and "PMI_SIZE" in env:
        launcher, rank, world = "pmi", _int(env, "PMI_RANK"), _int(env, "PMI_SIZE")
        local = _int(env, "MPI_LOCALRANKID") if "MPI_LOCALRANKID" in env else 0
        local_world = _int(env, "MPI_LOCALNRANKS") if "MPI_LOCALNRANKS" in env else world
    else:
        launcher, rank, world, local, local_world = "single", 0, 1, 0, 1
    if not 0 <= rank < world:
        raise BadInput(f"environment: rank {rank} is outside world size {world} ({launcher})")
    addr, port = _rendezvous(env, launcher, world, local_world)
    return JobEnvironment(launcher, rank, world, local, local_world, addr, port)


def _rendezvous(env: Mapping[str, str], launcher: str, world: int, local_world: int) -> tuple[str, int]:
    job_id = None
    if "SLURM_JOB_ID" in env and env["SLURM_JOB_ID"].isdigit():
        job_id = int(env["SLURM_JOB_ID"])
    hnp = env.get("OMPI_MCA_orte_hnp_uri", "")
    if job_id is None and launcher == "openmpi" and hnp.split(".")[0].isdigit():
        job_id = int(hnp.split(".")[0]) >> 16  # the job family: unique per mpirun
    port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else (
        20000 + job_id % 20000 if job_id is not None else 29500)
    if "MASTER_ADDR" in env:
        return env["MASTER_ADDR"], port
    if local_world >= world:
        return "127.0.0.1", port
    if "SLURM_JOB_NODELIST" in env:
        return first_slurm_host(env["SLURM_JOB_NODELIST"]), port
    m = re.search(r"tcp://([^:;,]+):", hnp)
    if launcher == "openmpi" and m:
        return m.group(1), port
    raise BadInput(f"environment: {world} ranks on several nodes under {launcher}: set MASTER_ADDR "
                   "(and MASTER_PORT) to rank 0's host")
