"""The rows for the environment a job gets: the profile itself, its modules, venv and container.

These are read from the profile and from what the probe's shell saw while it made
that environment (:class:`~larsctl.doctor.runner.ProbeResult`).
"""
from __future__ import annotations

from pathlib import Path

from larsctl.config.env import expand_path, variables_in
from larsctl.doctor.report import Check, fail, in_profile, ok, warn
from larsctl.doctor.runner import ProbeResult
from larsctl.schedulers.launch import value_of


def repo() -> Path:
    """The checkout larsctl (and the trainer) is installed from (installs are editable)."""
    import larsctl

    return Path(larsctl.__file__).resolve().parent.parent


def check_profile(profile) -> Check:
    per_node = (f"{profile.gpus_per_node} CPU workers" if profile.gpu_type == "cpu"
                else f"{profile.gpus_per_node} x {profile.gpu_type}")
    return ok("profile", f"{profile.name}: scheduler {profile.scheduler}, up to {profile.nodes} node(s) "
                         f"of {per_node}, mpi {profile.mpi}, engine {profile.engine}")


def check_venv(profile) -> list[Check]:
    """The profile's ``venv:`` (what the batch script sources) exists."""
    if not profile.venv:
        return []
    expanded = expand_path(profile.venv)
    unset = sorted(variables_in(expanded))
    if unset:
        return [fail("venv", f"{profile.venv}: {', '.join('$' + v for v in unset)} not set here",
                     f"export {unset[0]}=... (the job's environment must set it too), or "
                     + in_profile(profile, "write the venv path out in {file}"))]
    if not (Path(expanded) / "bin" / "activate").is_file():
        return [fail("venv", f"{expanded}: no bin/activate (not a virtual environment)",
                     f"create it: {profile.python} -m venv {expanded} && {expanded}/bin/pip install -e "
                     f"{repo()}, or " + in_profile(profile, "fix venv: in {file}"))]
    return [ok("venv", f"{expanded} (sourced before the probe, as the job does)")]


def check_container(profile) -> list[Check]:
    if not profile.container:
        return []
    image = expand_path(profile.container.image)
    if not Path(image).exists():
        return [fail("container image", f"{image}: not found",
                     f"build or copy the image there (e.g. {value_of(profile.container.runtime)} pull), "
                     "or " + in_profile(profile, "fix container.image in {file}"))]
    return [ok("container image", f"{image} (the Python checks ran inside it)")]


def check_modules(profile, probe: ProbeResult) -> list[Check]:
    if not profile.modules:
        return []
    names = ", ".join(profile.modules)
    if probe.modules_state == "missing":
        return [warn("modules", f"no `module` command here: {names} could not be loaded; the checks "
                                "below ran without them",
                     "run larsctl doctor on the cluster's login node, where `module` (Lmod or "
                     "Environment Modules) exists")]
    if probe.modules_failed:
        return [fail("modules", f"module load failed for {', '.join(probe.modules_failed)}"
                                + (f": {probe.modules_log}" if probe.modules_log else ""),
                     "check the names with `module avail` and "
                     + in_profile(profile, "fix modules: in {file}"))]
    if probe.modules_state == "loaded":
        return [ok("modules", f"loaded {names}")]
    return [warn("modules", f"{names}: not checked (the probe did not run)", "see the rows below")]
