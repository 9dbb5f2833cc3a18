"""``larsctl doctor``: does this machine have what a job on a cluster profile needs?

:func:`run_doctor` runs every check for one profile (and recipe) and returns a
:class:`~larsctl.doctor.report.Report` of rows (ok, warn or FAIL, what was found,
the fix).  Its exit code is 1 when a check fails, else 0; bad input (unknown
cluster, invalid profile or recipe file) raises the usual ``UserError`` (exit 2)
before any check runs.

The modules, one per group of checks:

report       the row and report records, the table, shared wording
probe        the probe the job's own Python runs (standard library only)
runner       starts the probe in the job's environment, reads what it found
environment  the profile, its modules, venv and container
stack        python, trainer, torch and GPUs, torchvision, DALI, Horovod or torch.distributed
launcher     what the launch line needs (``schedulers.launch.launch_needs``), found
scheduler    the scheduler classes' own ``doctor_checks`` (schedulers/slurm.py, pbs.py, local.py)
workdir      the job directories' parent
recipe       the plan, the trainer options and the data directories
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from larsctl.doctor.report import FAIL, OK, WARN, Check, Report, render

__all__ = ["FAIL", "OK", "WARN", "Check", "Report", "render", "run_doctor"]


def run_doctor(cluster: str, recipe: str | Path | None = None, timeout: float | None = None) -> Report:
    """All checks for ``cluster`` (and ``recipe``) on this machine.

    The probes get ``timeout`` seconds (default ``runner.PROBE_TIMEOUT_S``).  Raises
    ProfileError / RecipeError (UserError, exit 2) for bad input; every other
    problem is a FAIL row.  However it ends (Ctrl-C included), no probe is left running.
    """
    # Imported here: the package itself imports no check module, so that
    # `python -m larsctl.doctor.probe` runs the probe alone.
    from larsctl.config.profiles import load_profile
    from larsctl.config.recipes import load_recipe
    from larsctl.doctor.environment import check_container, check_modules, check_profile, check_venv
    from larsctl.doctor.launcher import check_launchers, default_layout, needs_for
    from larsctl.doctor.recipe import RecipeResult, check_data, check_recipe
    from larsctl.doctor.runner import PROBE_TIMEOUT_S, ProbeRun
    from larsctl.doctor.scheduler import check_scheduler
    from larsctl.doctor.stack import check_python_side
    from larsctl.doctor.workdir import check_workdir

    started, timeout = time.monotonic(), PROBE_TIMEOUT_S if timeout is None else timeout
    profile = load_profile(cluster)
    recipe_obj = recipe_path = None
    if recipe is not None:
        recipe_obj, recipe_path = load_recipe(recipe)

    recipe_result = check_recipe(profile, recipe_obj, recipe_path) if recipe_obj else RecipeResult(())
    spec = recipe_result.spec
    plan = spec.plan if spec is not None else default_layout(profile)
    needs = needs_for(profile, plan)
    stack_request = {"sections": ["stack"] + (["horovod"] if profile.engine == "horovod" else []),
                     "modules": list(needs.modules)}
    with ExitStack() as running:
        probe_run = running.enter_context(ProbeRun(profile, stack_request, needs.executables,
                                                   srun_list="pmix" in needs.names, timeout=timeout))
        # The data scan imports torchvision (seconds): a second probe, in parallel.
        data_request = {"sections": [], "data": recipe_result.data_request}
        data_run = (running.enter_context(ProbeRun(profile, data_request, timeout=timeout))
                    if recipe_result.data_request else None)
        # While the probes import torch: the checks that run from larsctl's own environment.
        scheduler_rows = check_scheduler(profile)
        workdir_row = check_workdir(profile, plan.nodes if spec is not None else profile.nodes)
        venv_rows = check_venv(profile)
        probe = probe_run.result()
        data_probe = data_run.result() if data_run else None

    rows: list[Check] = [check_profile(profile)]
    rows += check_modules(profile, probe)
    rows += venv_rows
    rows += check_container(profile)
    rows += check_python_side(profile, probe, needs, recipe_result.data_kind, recipe_obj is not None)
    rows += check_launchers(profile, needs, probe)
    rows += scheduler_rows
    rows.append(workdir_row)
    rows += recipe_result.rows
    rows += check_data(recipe_result.data_request, data_probe)
    return Report(cluster=profile.name, profile_file=str(profile.source) if profile.source else None,
                  recipe=str(recipe_path) if recipe_path else None, checks=tuple(rows),
                  seconds=time.monotonic() - started)
