"""The launcher rows: what the profile's launch line needs, found where the job runs.

doctor keeps no table of what an MPI flavour or engine needs: it asks the launch
builder (``schedulers.launch.launch_needs``), which reads it off the line
``build_launch`` writes.  Executables (mpirun, mpiexec, srun, the container runtime,
ssh) are looked up in the probe's shell; launcher modules (horovodrun, torchrun) in
the job's Python; what Horovod or torch must be built with (mpi, gloo, nccl) is
checked by the stack rows (:mod:`larsctl.doctor.stack`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace

from larsctl.doctor.report import Check, fail, first_line, in_profile, last_line, ok, warn
from larsctl.doctor.runner import ProbeResult
from larsctl.schedulers.launch import LAUNCHER_EXECUTABLES, LAUNCHER_MODULES, LaunchError, launch_needs

MODULES = {command: module for module, command in LAUNCHER_MODULES.items()}  # torchrun -> torch...run
BUILT_WITH = ("mpi", "gloo", "nccl")  # for the stack rows
NOT_EXECUTABLES = ("pmix", *BUILT_WITH, *MODULES)


def default_layout(profile) -> SimpleNamespace:
    """Without a recipe, the part of a plan ``build_launch`` reads: full nodes, two when the
    profile has several (so that the multi-node launch line is the one checked)."""
    nodes, per_node = min(profile.nodes, 2), profile.gpus_per_node
    return SimpleNamespace(nodes=nodes, gpus_per_node=per_node, gpus=nodes * per_node)


@dataclass(frozen=True)
class Needs:
    """``launch_needs`` for one profile and plan, or why there is no launch line."""

    names: frozenset = frozenset()
    error: str = ""

    @property
    def executables(self) -> tuple[str, ...]:
        """What the probe's shell looks up on PATH: the launcher first, ssh last."""
        found = [n for n in self.names if n not in NOT_EXECUTABLES]
        return tuple(sorted(found, key=lambda n: (n not in LAUNCHER_EXECUTABLES, n == "ssh", n)))

    @property
    def modules(self) -> tuple[str, ...]:
        """The ``python -m`` launcher modules the job's Python must have."""
        return tuple(MODULES[n] for n in sorted(self.names) if n in MODULES)


def needs_for(profile, plan) -> Needs:
    try:
        return Needs(launch_needs(profile, plan))
    except LaunchError as exc:
        return Needs(error=str(exc))


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
    "ssh": "install an ssh client (Debian: apt-get install openssh-client)",
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

def check_launchers(profile, needs: Needs, probe: ProbeResult) -> list[Check]:
    if needs.error:
        return [fail("launcher", needs.error,
                     in_profile(profile, "pick an mpi flavour this scheduler can launch in {file}"))]
    rows = [_executable_row(profile, name, needs, probe) for name in needs.executables]
    return rows + [_module_row(module, probe) for module in needs.modules]


def _executable_row(profile, name: str, needs: Needs, probe: ProbeResult) -> Check:
    tool, row = probe.tools.get(name, {}), f"launcher {name}"
    if not tool.get("path"):
        role = ("horovodrun starts the other nodes' ranks over it" if name == "ssh" else
                "the launch line starts with it" if name in LAUNCHER_EXECUTABLES else
                "runs the job's container")
        return fail(row, f"{name} not on PATH{probe.where()}; {role}",
                    INSTALL_HINT.get(name, f"install {name} or load the module that provides it"))
    path, version = tool["path"], tool.get("version", "")
    if name in ("mpirun", "mpiexec"):
        return _mpi_flavour_row(profile, row, name, path, version)
    if name == "srun":
        return _srun_row(row, path, tool, needs)
    if name == "ssh":
        return ok(row, f"{path}: horovodrun starts the other nodes' ranks over ssh (it must log in "
                       "without a password)")
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
                    f"load {wanted} (`module load ...`), or "
                    + in_profile(profile, f"set mpi: {flavour} in {{file}}"))
    return fail(row, f"{shown}: {FLAVOUR_NAMES[flavour]}, but mpi {mpi} launches with {wanted}'s "
                     f"{name} (its options differ)",
                f"put {wanted}'s {name} first on PATH (`module load ...`), or "
                + in_profile(profile, f"set mpi: {flavour} in {{file}}"))


def _srun_row(row: str, path: str, tool: dict, needs: Needs) -> Check:
    if "torchrun" in needs.names:
        return ok(row, f"{path} (starts one torchrun per node)")
    if "pmix" not in needs.names:
        return ok(row, f"{path} (starts every rank with the site's MPI plugin, its MpiDefault)")
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
