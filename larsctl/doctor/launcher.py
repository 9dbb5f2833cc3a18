"""The launcher rows: the launch line's launchers, found where the job runs.

Which launcher a profile needs is not kept in a table here: it is read off the
launch line ``schedulers.launch.build_launch`` writes for the profile (its first
word, and any ``python -m`` launcher module in it), so the two cannot disagree.
Executables (mpirun, mpiexec, srun, the container runtime) are looked up in the
probe's shell; launcher modules (horovodrun, torchrun) in the job's Python.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from larsctl.doctor.report import Check, fail, first_line, in_profile, last_line, ok, warn
from larsctl.doctor.runner import ProbeResult
from larsctl.schedulers.launch import LAUNCHER_MODULES, LaunchError, build_launch, container_prefix, value_of


def default_layout(profile) -> SimpleNamespace:
    """Without a recipe, the part of a plan ``build_launch`` reads: full nodes, two when the
    profile has several (so that the multi-node launch line is the one checked)."""
    nodes, per_node = min(profile.nodes, 2), profile.gpus_per_node
    return SimpleNamespace(nodes=nodes, gpus_per_node=per_node, gpus=nodes * per_node)


@dataclass(frozen=True)
class Launchers:
    """What the profile's launch line runs: executables on PATH and ``python -m`` modules."""

    executables: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    line: str = ""
    error: str = ""


def launchers_for(profile, plan, job_dir: Path) -> Launchers:
    """Read the launchers off the line ``build_launch`` writes for ``plan`` on ``profile``."""
    try:
        launch = build_launch(profile, plan, job_dir, job_id="doctor")
    except LaunchError as exc:
        return Launchers(error=str(exc))
    words = [str(w) for w in launch.words]
    executables: list[str] = []
    if words and words[0] != profile.python:
        executables.append(words[0])
    box = container_prefix(profile)
    if box and str(box[0]) not in executables:
        executables.append(str(box[0]))
    modules = [words[i + 2] for i in range(len(words) - 2)
               if words[i] == profile.python and words[i + 1] == "-m" and words[i + 2] != "trainer"]
    return Launchers(tuple(executables), tuple(dict.fromkeys(modules)), launch.line)


# --- which MPI a launcher belongs to -----------------------------------------------------

FLAVOUR_NAMES = {"openmpi": "Open MPI", "mpich": "MPICH (Hydra)", "intelmpi": "Intel MPI",
                 "mvapich2": "MVAPICH2"}
HYDRA_ALIKE = {"mvapich2": ("mpich",), "mpich": ("intelmpi", "mvapich2"), "intelmpi": ("mpich",)}
INSTALL_HINT = {
    "mpirun": "install Open MPI (Debian: apt-get install openmpi-bin) or `module load openmpi`",
    "mpiexec": "load the MPI that provides Hydra's mpiexec (e.g. `module load mpich`, "
               "`module load intel-mpi`, `module load mvapich2`)",
    "srun": "run larsctl on a Slurm login node (srun comes with Slurm's client commands) or "
            "`module load slurm`",
}


def flavour_of(version_text: str) -> str | None:
    """The MPI a launcher belongs to, from its ``--version`` output."""
    text = version_text or ""
    if "Intel(R) MPI Library" in text:
        return "intelmpi"
    if "MVAPICH2" in text.upper():
        return "mvapich2"
    if "Open MPI" in text or "(OpenRTE)" in text or "(Open MPI)" in text:
        return "openmpi"
    if "HYDRA build details" in text:
        return "mpich"
    return None


# --- the rows ----------------------------------------------------------------------------

def check_launchers(profile, launchers: Launchers, probe: ProbeResult) -> list[Check]:
    if launchers.error:
        return [fail("launcher", launchers.error,
                     in_profile(profile, "pick an mpi flavour this scheduler can launch in {file}"))]
    rows = [_executable_row(profile, name, launchers, probe) for name in launchers.executables]
    return rows + [_module_row(module, probe) for module in launchers.modules]


def _executable_row(profile, name: str, launchers: Launchers, probe: ProbeResult) -> Check:
    tool, row = probe.tools.get(name, {}), f"launcher {name}"
    if not tool.get("path"):
        role = ("runs the job's container" if launchers.executables.index(name) > 0 or
                (profile.container and name == value_of(profile.container.runtime))
                else "the launch line starts with it")
        return fail(row, f"{name} not on PATH{probe.where()}; {role}",
                    INSTALL_HINT.get(name, f"install {name} or load the module that provides it"))
    path, version = tool["path"], tool.get("version", "")
    if name in ("mpirun", "mpiexec"):
        return _mpi_flavour_row(profile, row, name, path, version)
    if name == "srun":
        return _srun_row(row, path, tool, profile.mpi)
    return ok(row, f"{path}: {first_line(version) or 'found'}")  # the container runtime


def _module_row(module: str, probe: ProbeResult) -> Check:
    row = f"launcher {LAUNCHER_MODULES[module]}"
    if not probe.data:
        return fail(row, f"not checked: {probe.error}", "see the python row")
    found = probe.data.get("modules", {}).get(module)
    if found:
        return ok(row, f"{probe.python_label} -m {module} ({found})")
    return fail(row, f"{probe.python_label} -m {module}: no such module{probe.where()}",
                f"install {module.split('.')[0]} in the job's environment")


def _mpi_flavour_row(profile, row: str, name: str, path: str, version: str) -> Check:
    mpi, flavour = profile.mpi, flavour_of(version)
    shown = f"{path}: {first_line(version) or 'no --version output'}"
    wanted = FLAVOUR_NAMES.get(mpi, mpi)
    if flavour == mpi:
        return ok(row, f"{shown} ({FLAVOUR_NAMES[flavour]}, as mpi {mpi} wants)")
    if flavour is None:
        return warn(row, f"{shown}: cannot tell its MPI from --version (mpi {mpi} wants {wanted})",
                    f"make sure `{name}` is {wanted}'s: `module load` it first")
    if flavour in HYDRA_ALIKE.get(mpi, ()):
        return warn(row, f"{shown}: {FLAVOUR_NAMES[flavour]}, not {wanted} (mpi {mpi}); Hydra's "
                         "options are the same, but Horovod must be built against this MPI",
                    f"load {wanted} (`module load ...`) or set mpi: {flavour} in the profile")
    return fail(row, f"{shown}: {FLAVOUR_NAMES[flavour]}, but mpi {mpi} launches with {wanted}'s "
                     f"{name} (its options differ)",
                f"put {wanted}'s {name} first on PATH (`module load ...`), or set mpi: {flavour} "
                "in the profile")


def _srun_row(row: str, path: str, tool: dict, mpi: str) -> Check:
    if mpi != "srun-pmix":
        return ok(row, f"{path} (starts one torchrun per node)")
    listing = tool.get("mpi_list", "")
    plugins = re.findall(r"^\s+(\S+)\s*$", listing, re.M)
    if "MPI plugin types" not in listing:
        return warn(row, f"{path}: `srun --mpi=list` did not answer: {last_line(listing) or 'no output'}",
                    "run on the cluster's login node (srun needs the cluster's slurm.conf)")
    if any(p.startswith("pmix") for p in plugins):
        return ok(row, f"{path}: --mpi=pmix offered (plugins: {', '.join(plugins)})")
    return fail(row, f"{path}: no pmix in `srun --mpi=list` ({', '.join(plugins) or 'none'})",
                "ask the admins for Slurm's PMIx plugin, or use mpi: openmpi (mpirun reads the "
                "Slurm allocation)")
