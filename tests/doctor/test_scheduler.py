"""The scheduler rows, asked of the scheduler classes themselves (``doctor_checks``)."""
from __future__ import annotations

import shutil

import pytest

from larsctl.doctor.report import FAIL, OK
from larsctl.doctor.scheduler import check_scheduler
from larsctl.schedulers.pbs import PbsScheduler
from larsctl.schedulers.slurm import SlurmScheduler


def test_each_scheduler_answers_for_itself(make_profile):
    (row,) = check_scheduler(make_profile(name="here"))
    assert row.status == OK and row.name == "scheduler" and row.found.startswith("local: ")


@pytest.mark.parametrize("scheduler, missing", [
    (PbsScheduler(), "not on PATH: qsub, qstat, qdel"),
    (SlurmScheduler(), "not on PATH: sbatch, squeue, sacct, scancel, scontrol"),
])
def test_scheduler_commands_missing_from_path(scheduler, missing, make_profile, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no scheduler commands at all
    rows = scheduler.doctor_checks(make_profile(name="nothing", scheduler=scheduler.name))
    assert [(r.status, r.found) for r in rows] == [(FAIL, missing)]  # nothing else to ask
    assert "login node" in rows[0].fix


@pytest.mark.slurm
def test_slurm_rows_against_the_test_slurm(make_profile, slurm_cluster):
    rows = {r.name: r for r in SlurmScheduler().doctor_checks(make_profile(name="dbg", scheduler="slurm",
                                                                           partition="debug"))}
    assert rows["slurm controller"].found.startswith("answers (sinfo): partitions debug* (up)")
    assert rows["slurm partition"].found == "debug (up)"
    rows = {r.name: r for r in SlurmScheduler().doctor_checks(make_profile(name="dflt", scheduler="slurm"))}
    assert rows["slurm partition"].found == "none set: jobs go to the default partition debug"


@pytest.mark.slurm
def test_pbs_rows_against_slurms_torque_client(make_profile, slurm_cluster):
    """Slurm's Torque wrappers (qsub/qstat/qdel) stand in for a PBS server: qstat -Q answers."""
    if not all(shutil.which(c) for c in ("qsub", "qstat", "qdel")):
        pytest.skip("Slurm's Torque client (slurm-wlm-torque) is not installed")
    good = {r.name: r for r in PbsScheduler().doctor_checks(make_profile(name="pbsq", scheduler="pbs",
                                                                          partition="debug"))}
    assert good["pbs commands"].status == good["pbs server"].status == OK
    assert good["pbs queue"].found == "debug" and good["pbs queue"].status == OK
    bad = {r.name: r for r in PbsScheduler().doctor_checks(make_profile(name="pbsx", scheduler="pbs",
                                                                         partition="dgx"))}
    assert bad["pbs queue"].status == FAIL and bad["pbs queue"].found.startswith("'dgx' is not a queue here")
