"""The launcher rows: read off the launch line, found where the job runs."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from larsctl.config.profiles import read_profile
from larsctl.doctor.launcher import Launchers, check_launchers, default_layout, flavour_of, launchers_for
from larsctl.doctor.report import FAIL, OK
from larsctl.doctor.runner import ProbeResult, ProbeRun
from larsctl.schedulers.slurm import SlurmScheduler

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "tests" / "schedulers" / "profiles"


@pytest.mark.parametrize("name, executables, modules", [
    ("slurm-v100-openmpi", ("mpirun",), ()),
    ("pbs-a100-mpich", ("mpiexec",), ()),
    ("slurm-a100-pmix-apptainer", ("srun", "apptainer"), ()),
    ("pbs-v100-gloo", (), ("horovod.runner.launch",)),
    ("slurm-h100-ddp", ("srun",), ("torch.distributed.run",)),
])
def test_launchers_are_read_off_the_launch_line(name, executables, modules):
    profile = read_profile(PROFILES / f"{name}.yaml")
    launchers = launchers_for(profile, default_layout(profile), Path("/scratch/job"))
    assert (launchers.executables, launchers.modules) == (executables, modules)
    # A launcher that is a Python module runs under the profile's own python.
    first = executables[0] if executables else f"{profile.python} -m {modules[0]}"
    assert launchers.line.startswith(first), launchers.line


def test_srun_pmix_on_pbs_has_no_launch_line(make_profile, tmp_path):
    profile = make_profile(name="pbspmix", scheduler="pbs", mpi="srun-pmix")
    launchers = launchers_for(profile, default_layout(profile), tmp_path)
    (row,) = check_launchers(profile, launchers, ProbeResult())
    assert row.status == FAIL and "srun-pmix needs scheduler slurm" in row.found


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI not installed")
def test_open_mpi_is_recognised_from_its_real_version_output():
    for tool in ("mpirun", "mpiexec"):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
        assert flavour_of(out.stdout + out.stderr) == "openmpi"
    # An MPICH profile whose `mpiexec` is Open MPI's: the Hydra options would be rejected.
    out = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True, timeout=30).stdout
    probe = ProbeResult(tools={"mpiexec": {"path": shutil.which("mpiexec"), "version": out}})
    profile = read_profile(PROFILES / "pbs-a100-mpich.yaml")
    (row,) = check_launchers(profile, Launchers(("mpiexec",)), probe)
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
def test_srun_pmix_launcher_on_the_test_slurm(make_profile, slurm_cluster, tmp_path):
    profile = make_profile(name="pmix", scheduler="slurm", mpi="srun-pmix", partition="nope")
    launchers = launchers_for(profile, default_layout(profile), tmp_path)
    assert launchers.executables == ("srun",)
    # The real probe shell (no Python sections: fast), which runs `srun --mpi=list`.
    probe = ProbeRun(profile, {"sections": []}, launchers.executables, srun_list=True).result()
    (row,) = check_launchers(profile, launchers, probe)
    has_pmix = any(Path("/usr/lib").glob("*/slurm-wlm/mpi_pmix*.so"))
    assert row.status == (OK if has_pmix else FAIL), row
    assert "pmix" in row.found
    rows = {r.name: r for r in SlurmScheduler().doctor_checks(profile)}
    assert rows["slurm controller"].status == OK
    assert rows["slurm partition"].status == FAIL
    assert rows["slurm partition"].found.startswith("'nope' is not a partition here (have: debug")
