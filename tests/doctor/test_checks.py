"""The doctor's check functions called directly (fast: no probe process), on real files and tools."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from larsctl.cli import COMMANDS, cli
from larsctl.config.profiles import read_profile
from larsctl import doctor as dr

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "tests" / "schedulers" / "profiles"


def _profile(tmp_path: Path, **fields):
    import yaml

    data = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    data.update(fields)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return read_profile(path)


def test_help_has_an_example_through_the_lazy_group():
    assert COMMANDS["doctor"] == "larsctl.commands.doctor:doctor"
    r = CliRunner().invoke(cli, ["doctor", "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and "larsctl doctor --cluster" in r.output


def test_the_command_module_imports_nothing_heavy():
    """`larsctl --help` imports every command module: doctor's must stay light."""
    code = ("import sys, larsctl.commands.doctor; "
            "print(sorted(m for m in ('torch', 'pydantic', 'yaml', 'larsctl.doctor') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.parametrize("name, executables, modules", [
    ("slurm-v100-openmpi", ("mpirun",), ()),
    ("pbs-a100-mpich", ("mpiexec",), ()),
    ("slurm-a100-pmix-apptainer", ("srun", "apptainer"), ()),
    ("pbs-v100-gloo", (), ("horovod.runner.launch",)),
    ("slurm-h100-ddp", ("srun",), ("torch.distributed.run",)),
])
def test_launchers_are_read_off_the_launch_line(name, executables, modules):
    profile = read_profile(PROFILES / f"{name}.yaml")
    launchers = dr.launchers_for(profile, dr.default_layout(profile), Path("/scratch/job"))
    assert (launchers.executables, launchers.modules) == (executables, modules)
    # A launcher that is a Python module runs under the profile's own python.
    first = executables[0] if executables else f"{profile.python} -m {modules[0]}"
    assert launchers.line.startswith(first), launchers.line


def test_srun_pmix_on_pbs_has_no_launch_line(tmp_path):
    profile = _profile(tmp_path, name="pbspmix", scheduler="pbs", mpi="srun-pmix")
    launchers = dr.launchers_for(profile, dr.default_layout(profile), tmp_path)
    row = dr.check_launchers(profile, launchers, dr.Probe())[0]
    assert row.status == dr.FAIL and "srun-pmix needs scheduler slurm" in row.found


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI not installed")
def test_open_mpi_is_recognised_from_its_real_version_output():
    for tool in ("mpirun", "mpiexec"):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
        assert dr.flavour_of(out.stdout + out.stderr) == "openmpi"
    # An MPICH profile whose `mpiexec` is Open MPI's: the Hydra options would be rejected.
    out = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True, timeout=30).stdout
    probe = dr.Probe(tools={"mpiexec": {"path": shutil.which("mpiexec"), "version": out}})
    profile = read_profile(PROFILES / "pbs-a100-mpich.yaml")
    (row,) = dr.check_launchers(profile, dr.Launchers(("mpiexec",)), probe)
    assert row.status == dr.FAIL and "Open MPI, but mpi mpich launches with MPICH (Hydra)" in row.found


@pytest.mark.parametrize("text, flavour", [
    ("HYDRA build details:\n    Version:                                 4.0.2\n", "mpich"),
    ("Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619\n", "intelmpi"),
    ("HYDRA build details:\n    Version: 3.2.1\n    Configure options: '--prefix=/opt/mvapich2-2.3.7'\n",
     "mvapich2"),
    ("something else 1.0\n", None),
])
def test_hydra_flavours(text, flavour):
    assert dr.flavour_of(text) == flavour


def test_workdir_on_tmpfs_warns_only_for_multi_node_profiles(tmp_path):
    if dr.filesystem_of(Path("/dev/shm"))[1] != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    workdir = Path("/dev/shm") / f"larsctl-doctor-test-{os.getpid()}" / "runs"
    one = dr.check_workdir(_profile(tmp_path, name="one", workdir=str(workdir), nodes=1), nodes=1)
    many = dr.check_workdir(_profile(tmp_path, name="many", workdir=str(workdir), nodes=4), nodes=4)
    assert one.status == dr.OK and "tmpfs" in one.found and "will be created" in one.found
    assert many.status == dr.WARN and "node-local" in many.found and "shared filesystem" in many.fix
    assert not workdir.parent.exists()  # checking creates nothing


def test_workdir_with_an_unset_variable_fails_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("LARSCTL_DOCTOR_UNSET", raising=False)
    profile = _profile(tmp_path, name="unset", workdir="$LARSCTL_DOCTOR_UNSET/larsctl")
    row = dr.check_workdir(profile, nodes=1)
    assert row.status == dr.FAIL and row.found == "$LARSCTL_DOCTOR_UNSET/larsctl: $LARSCTL_DOCTOR_UNSET not set here"
    assert row.fix.startswith("export LARSCTL_DOCTOR_UNSET=")
    monkeypatch.setenv("LARSCTL_DOCTOR_UNSET", str(tmp_path))
    assert dr.check_workdir(profile, nodes=1).status == dr.OK


def test_existing_workdir_is_really_written(tmp_path):
    workdir = tmp_path / "runs"
    workdir.mkdir()
    row = dr.check_workdir(_profile(tmp_path, name="exists", workdir=str(workdir)), nodes=1)
    assert row.status == dr.OK and row.found.startswith(f"{workdir}: exists, writable")
    assert list(workdir.iterdir()) == []  # the test file is gone again


def test_scheduler_commands_missing_from_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no scheduler commands at all
    row = dr.check_commands("pbs", dr.PBS_COMMANDS)
    assert row.status == dr.FAIL and row.found == "not on PATH: qsub, qstat, qdel"


def test_render_puts_the_fix_under_its_row():
    report = dr.Report("c", None, None, (dr.ok("python", "3.11"), dr.fail("workdir", "/x: no", "mkdir it")))
    text = dr.render(report)
    lines = text.splitlines()
    assert "workdir" in lines[2] and lines[3].strip() == "fix: mkdir it"
    assert report.exit_code == 1 and report.to_dict()["counts"] == {"ok": 1, "warn": 0, "FAIL": 1}


def test_engine_ddp_needs_no_horovod(tmp_path, local_probe):
    profile = _profile(tmp_path, name="localddp", engine="ddp")
    rows = {r.name: r for r in dr.check_python_side(profile, local_probe, None, False)}
    assert rows["horovod"] == dr.ok("horovod", "not needed: engine ddp uses torch.distributed (torchrun)")
    assert "horovod ops" not in rows
    assert rows["torch.distributed"].status == dr.OK and "the ddp engine uses gloo" in rows["torch.distributed"].found
    launchers = dr.launchers_for(profile, dr.default_layout(profile), tmp_path)
    assert launchers.modules == ("torch.distributed.run",) and launchers.executables == ()
    (row,) = dr.check_launchers(profile, launchers, local_probe)
    assert row.status == dr.OK and row.name == "launcher torchrun"


def test_gpu_profile_rows_follow_what_this_machine_has(tmp_path, local_probe):
    """The same real probe read against a GPU profile: what a login node without GPUs looks like."""
    profile = _profile(tmp_path, name="gpus", scheduler="slurm", gpu_type="A100-80GB", mpi="openmpi",
                       gpus_per_node=4, partition="gpu")
    rows = {r.name: r for r in dr.check_python_side(profile, local_probe, None, False)}
    torch_info, hvd = local_probe.data["torch"], local_probe.data["horovod"]
    if torch_info.get("cuda") or torch_info.get("hip"):
        assert rows["torch"].status == dr.OK
    else:
        assert rows["torch"].status == dr.FAIL and "needs a CUDA build" in rows["torch"].found
    if not torch_info["devices"]:
        assert rows["gpus"].status == dr.WARN
        assert "srun --partition gpu --gres=gpu:1 --pty larsctl doctor --cluster gpus" in rows["gpus"].fix
    if hvd.get("mpi") and not hvd.get("nccl"):
        assert rows["horovod ops"].status == dr.WARN and "NCCL no" in rows["horovod ops"].found
        assert "HOROVOD_GPU_OPERATIONS=NCCL" in rows["horovod ops"].fix


def test_dali_row_depends_on_the_recipe(tmp_path, local_probe):
    profile = _profile(tmp_path, name="cpu")
    info = local_probe.data["dali"]
    needed = dr._dali_row(profile, info, "dali", True)
    unused = dr._dali_row(profile, info, "imagefolder", True)
    if "version" in info:
        assert needed.status == unused.status == dr.OK and "data: dali" in needed.found
    else:  # not installed: fatal only when the recipe reads TFRecords
        assert needed.status == dr.FAIL and unused.status == dr.OK


@pytest.mark.slurm
def test_srun_pmix_launcher_and_partition_on_the_test_slurm(tmp_path, slurm_cluster):
    profile = _profile(tmp_path, name="pmix", scheduler="slurm", mpi="srun-pmix", partition="nope")
    launchers = dr.launchers_for(profile, dr.default_layout(profile), tmp_path)
    assert launchers.executables == ("srun",)
    # The real probe shell (no Python sections: fast), which runs `srun --mpi=list`.
    probe = dr.ProbeRun(profile, launchers.executables, {"sections": []}).result()
    (row,) = dr.check_launchers(profile, launchers, probe)
    has_pmix = any(Path("/usr/lib").glob("*/slurm-wlm/mpi_pmix*.so"))
    assert row.status == (dr.OK if has_pmix else dr.FAIL), row
    assert "pmix" in row.found
    rows = {r.name: r for r in dr.check_slurm(profile)}
    assert rows["slurm controller"].status == dr.OK
    assert rows["slurm partition"].status == dr.FAIL
    assert rows["slurm partition"].found.startswith("'nope' is not a partition here (have: debug")


def _has_module_command() -> bool:
    r = subprocess.run(["bash", "-lc", "type module"], capture_output=True, text=True, timeout=30)
    return r.returncode == 0


def test_modules_that_cannot_be_loaded_here_are_a_warning(tmp_path):
    if _has_module_command():
        pytest.skip("this machine has a `module` command")
    profile = _profile(tmp_path, name="mods", modules=["gcc/12.2", "openmpi/4.1"])
    probe = dr.ProbeRun(profile, (), {"sections": []}).result()  # the real bash -lc probe, no imports
    (row,) = dr.check_modules(profile, probe)
    assert row.status == dr.WARN and "no `module` command here: gcc/12.2, openmpi/4.1" in row.found
    assert "login node" in row.fix
    assert probe.data["python"]["executable"]  # the probe still ran, without them


def test_a_module_that_does_not_load_fails_naming_it(tmp_path, monkeypatch):
    """`module` as clusters pass it to batch jobs: an exported bash function (here a tiny stand-in
    for Lmod that knows one module)."""
    if _has_module_command():
        pytest.skip("this machine has its own `module` command")
    monkeypatch.setenv("BASH_FUNC_module%%", '() {  if [ "$2" = gcc/12.2 ]; then export LOADED_GCC=1; '
                       'else echo "Lmod has detected the following error: unknown module $2" >&2; return 1; fi\n}')
    profile = _profile(tmp_path, name="mods", modules=["gcc/12.2", "cuda/99"])
    probe = dr.ProbeRun(profile, (), {"sections": []}).result()
    (row,) = dr.check_modules(profile, probe)
    assert row.status == dr.FAIL and row.found.startswith("module load failed for cuda/99: Lmod has")
    good = _profile(tmp_path, name="good", modules=["gcc/12.2"])
    (row,) = dr.check_modules(good, dr.ProbeRun(good, (), {"sections": []}).result())
    assert row == dr.ok("modules", "loaded gcc/12.2")


@pytest.mark.slurm
def test_pbs_rows_against_slurms_torque_client(tmp_path, slurm_cluster):
    """Slurm's Torque wrappers (qsub/qstat/qdel) stand in for a PBS server: qstat -Q answers."""
    if not all(shutil.which(c) for c in dr.PBS_COMMANDS):
        pytest.skip("Slurm's Torque client (slurm-wlm-torque) is not installed")
    good = {r.name: r for r in dr.check_pbs(_profile(tmp_path, name="pbsq", scheduler="pbs",
                                                     partition="debug"))}
    assert good["pbs commands"].status == good["pbs server"].status == dr.OK
    assert good["pbs queue"] == dr.ok("pbs queue", "debug")
    bad = {r.name: r for r in dr.check_pbs(_profile(tmp_path, name="pbsx", scheduler="pbs",
                                                    partition="dgx"))}
    assert bad["pbs queue"].status == dr.FAIL and bad["pbs queue"].found.startswith("'dgx' is not a queue here")
