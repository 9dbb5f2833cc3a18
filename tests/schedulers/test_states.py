"""State tables and the pure parsers of squeue, sacct and qstat output."""
from __future__ import annotations

import json

import pytest

from larsctl.schedulers import JobState
from larsctl.facts.jobdir import JobPaths
from larsctl.schedulers.pbs import parse_qstat_full, parse_qstat_json, pbs_state
from larsctl.schedulers.slurm import parse_sacct, parse_squeue, slurm_state


@pytest.mark.parametrize("text, state", [
    ("PENDING", JobState.PENDING), ("CONFIGURING", JobState.PENDING), ("RUNNING", JobState.RUNNING),
    ("COMPLETING", JobState.RUNNING), ("REQUEUED", JobState.REQUEUED), ("REQUEUE_HOLD", JobState.REQUEUED),
    ("REQUEUE_FED", JobState.REQUEUED), ("COMPLETED", JobState.COMPLETED), ("FAILED", JobState.FAILED),
    ("NODE_FAIL", JobState.FAILED), ("OUT_OF_MEMORY", JobState.FAILED), ("BOOT_FAIL", JobState.FAILED),
    ("TIMEOUT", JobState.TIMEOUT), ("DEADLINE", JobState.TIMEOUT), ("CANCELLED by 0", JobState.CANCELLED),
    ("CANCELLED+", JobState.CANCELLED), ("PREEMPTED", JobState.PREEMPTED), ("SUSPENDED", JobState.RUNNING),
    ("SOMETHING_NEW", JobState.UNKNOWN), ("", JobState.UNKNOWN),
])
def test_slurm_state_table(text, state):
    assert slurm_state(text) is state


@pytest.mark.parametrize("letter, status, state", [
    ("Q", None, JobState.PENDING), ("H", None, JobState.PENDING), ("W", None, JobState.PENDING),
    ("R", None, JobState.RUNNING), ("E", None, JobState.RUNNING), ("S", None, JobState.RUNNING),
    ("F", 0, JobState.COMPLETED), ("F", 1, JobState.FAILED), ("F", 75, JobState.FAILED),
    ("F", -29, JobState.TIMEOUT), ("F", 271, JobState.CANCELLED), ("C", None, JobState.COMPLETED),
    ("C", 2, JobState.FAILED), ("Z", None, JobState.UNKNOWN),
])
def test_pbs_state_table(letter, status, state):
    assert pbs_state(letter, status) is state


def test_parse_squeue_rows():
    text = "12|RUNNING|0|None|\n13|PENDING|1|BeginTime|\n14_[1-2]|PENDING|0|Dependency|\n"
    infos = parse_squeue(text)
    assert infos["12"].state is JobState.RUNNING and infos["12"].reason == ""
    assert infos["13"].restarts == 1 and infos["13"].reason == "BeginTime"
    assert infos["14_2"].state is JobState.PENDING  # array ranges expanded (submitit's parser)


def test_parse_sacct_takes_the_allocation_row():
    text = "JobID|State|ExitCode\n7|CANCELLED by 0|0:15\n8|COMPLETED|0:0\n8.batch|COMPLETED|0:0\n"
    infos = parse_sacct(text)
    assert infos["7"].state is JobState.CANCELLED and infos["7"].reason == "exit 0:15"
    assert infos["8"].state is JobState.COMPLETED and "8.batch" not in infos


def test_parse_qstat_json_pbs_pro():
    text = json.dumps({"pbs_version": "2022.1", "Jobs": {
        "101.srv": {"job_state": "F", "Exit_status": 0, "run_count": 1},
        "102.srv": {"job_state": "Q", "comment": "Not Running: Insufficient amount of resource: ngpus"},
        "103.srv": {"job_state": "F", "Exit_status": -29, "run_count": 2}}})
    infos = parse_qstat_json(text)
    assert infos["101.srv"].state is JobState.COMPLETED
    assert infos["102.srv"].state is JobState.PENDING and "ngpus" in infos["102.srv"].reason
    assert infos["103.srv"].state is JobState.TIMEOUT and infos["103.srv"].restarts == 1
    assert parse_qstat_json("Unknown option: x") is None


def test_parse_qstat_full_torque_blocks():
    text = ("Job Id:\t5\n\tJob_Name = tq\n\tjob_state = C\n\tqueue = debug\n"
            "Job Id: 6.host\n\tjob_state = R\n\texit_status = 0\n")
    infos = parse_qstat_full(text)
    assert infos["5"].state is JobState.COMPLETED and infos["6.host"].state is JobState.RUNNING


def test_restart_records(tmp_path):
    (tmp_path / "restarts").write_text("time=t scheduler_id=5 restart=1 rc=75 signal=USR2 segment=0\n"
                                       "time=u scheduler_id=9.srv restart=2 rc=75 signal=none next=10.srv\n")
    rows = JobPaths(tmp_path).restart_records()
    assert [r["restart"] for r in rows] == ["1", "2"] and rows[1]["next"] == "10.srv"
    assert JobPaths(tmp_path).resubmitted_ids() == ["10.srv"]
    assert JobPaths(tmp_path / "missing").restart_records() == []
