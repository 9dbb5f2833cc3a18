"""The launcher rows: doctor checks what the launch line needs (``launch_needs``), nothing else."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from larsctl.config.profiles import read_profile
from larsctl.doctor.launcher import Needs, check_launchers, default_layout, flavour_of, needs_for
from larsctl.doctor.report import FAIL, OK
from larsctl.doctor.runner import ProbeResult, ProbeRun
from larsctl.schedulers.slurm import SlurmScheduler

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "tests" / "schedulers" / "profiles"


@pytest.mark.parametrize("name, executables, modules", [
    ("slurm-v100-openmpi", ("mpirun",), ()),
    ("pbs-a100-mpich", ("mpiexec",), ()),
    ("slurm-a100-pmix-apptainer", ("srun", "apptainer"), ()),
    ("pbs-v100-gloo", ("ssh",), ("horovod.runner.launch",)),  # horovodrun across nodes: over ssh
    ("slurm-h100-ddp", ("srun",), ("torch.distributed.run",)),
])
def test_what_is_looked_up_follows_the_launch_line(name, executables, modules):
    profile = read_profile(PROFILES / f"{name}.yaml")
    needs = needs_for(profile, default_layout(profile))
    assert (needs.executables, needs.modules) == (executables, modules)


def test_srun_pmix_on_pbs_has_no_launch_line(make_profile):
    profile = make_profile(name="pbspmix", scheduler="pbs", mpi="srun-pmix")
    needs = needs_for(profile, default_layout(profile))
    (row,) = check_launchers(profile, needs, ProbeResult())
    assert row.status == FAIL and "srun-pmix needs scheduler slurm" in row.found


@pytest.mark.skipif(shutil.which("srun") is None, reason="srun (Slurm's client) is not installed")
def test_plain_srun_flavour_needs_horovod_with_mpi_and_srun_starts_every_rank(doctor, tmp_path):
    """slurm-p100 (Cray MPICH under plain srun), made runnable here: the venv, no modules."""
    cluster = doctor.write_profile("p100here", base="slurm-p100", modules=[], venv=str(doctor.REPO / ".venv"),
                                   workdir=str(tmp_path / "runs"))
    report, _ = doctor.json("--cluster", cluster)
    rows = doctor.rows(report)
    srun = rows["launcher srun"]
    assert srun["status"] == "ok", srun
    assert "torchrun" not in srun["found"]  # engine horovod: srun starts the ranks themselves
    assert "starts every rank" in srun["found"] and "MpiDefault" in srun["found"]
    ops = rows["horovod ops"]
    assert "mpi srun needs MPI" in ops["found"], ops  # Cray MPICH: Horovod must be built with MPI
    assert "needs Gloo" not in ops["found"]
    assert "launcher horovodrun" not in rows and "launcher ssh" not in rows


def test_horovodrun_across_nodes_needs_ssh_where_the_job_runs(make_profile, doctor, monkeypatch):
    """The real probe shell, with this PATH and with one that really lacks ssh."""
    profile = make_profile(name="gloo2", scheduler="slurm", nodes=2, mpi="gloo")
    needs = needs_for(profile, default_layout(profile))
    assert needs.executables == ("ssh",) and needs.modules == ("horovod.runner.launch",)

    def ssh_row():
        probe = ProbeRun(profile, {"sections": []}, needs.executables).result()
        return {r.name: r for r in check_launchers(profile, needs, probe)}["launcher ssh"]

    if shutil.which("ssh"):
        row = ssh_row()
        assert row.status == OK and row.found.startswith(shutil.which("ssh") + ": horovodrun starts")
    monkeypatch.setenv("PATH", doctor.path_without("ssh"))
    row = ssh_row()
    assert row.status == FAIL and row.found == "ssh not on PATH; horovodrun starts the other nodes' ranks over it"
    assert "openssh-client" in row.fix


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI not installed")
def test_open_mpi_is_recognised_from_its_real_version_output():
    for tool in ("mpirun", "mpiexec"):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
        assert flavour_of(out.stdout + out.stderr) == "openmpi"
    # An MPICH profile whose `mpiexec` is Open MPI's: the Hydra options would be rejected.
    out = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True, timeout=30).stdout
    probe = ProbeResult(tools={"mpiexec": {"path": shutil.which("mpiexec"), "version": out}})
    profile = read_profile(PROFILES / "pbs-a100-mpich.yaml")
    (row,) = check_launchers(profile, Needs(frozenset({"mpiexec", "mpi", "nccl"})), probe)
    assert row.status == FAIL and "Open MPI, but mpi mpich launches with MPICH (Hydra)" in row.found


@pytest.mark.parametrize("text, flavour", [
    ("HYDRA build details:\n    Version:                                 4.0.2\n", "mpich"),
    ("Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619\n", "intelmpi"),
    ("HYDRA build details:\n    Version: 3.2.1\n    Configure options: '--prefix=/opt/mvapich2-2.3.7'\n",
     "mvapich2"),
    ("something else 1.0\n", None),
])
def test_hydra_flavours(text, flavour):
    assert flavour_of(text) == flavour


@pytest.mark.slurm
def test_srun_pmix_launcher_on_the_test_slurm(make_profile, slurm_cluster):
    profile = make_profile(name="pmix", scheduler="slurm", mpi="srun-pmix", partition="nope")
    needs = needs_for(profile, default_layout(profile))
    assert needs.executables == ("srun",) and "pmix" in needs.names
    # The real probe shell (no Python sections: fast), which runs `srun --mpi=list`.
    probe = ProbeRun(profile, {"sections": []}, needs.executables, srun_list=True).result()
    (row,) = check_launchers(profile, needs, probe)
    has_pmix = any(Path("/usr/lib").glob("*/slurm-wlm/mpi_pmix*.so"))
    assert row.status == (OK if has_pmix else FAIL), row
    assert "pmix" in row.found
    rows = {r.name: r for r in SlurmScheduler().doctor_checks(profile)}
    assert rows["slurm controller"].status == OK
    assert rows["slurm partition"].status == FAIL
    assert rows["slurm partition"].found.startswith("'nope' is not a partition here (have: debug")
