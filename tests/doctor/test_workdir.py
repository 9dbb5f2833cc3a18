"""The workdir row: exists or can be made, really writable, shared when jobs span nodes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from larsctl.doctor.report import FAIL, OK, WARN
from larsctl.doctor.workdir import check_workdir, filesystem_of


def test_workdir_on_tmpfs_warns_only_for_multi_node_profiles(make_profile):
    if filesystem_of(Path("/dev/shm"))[1] != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    workdir = Path("/dev/shm") / f"larsctl-doctor-test-{os.getpid()}" / "runs"
    one = check_workdir(make_profile(name="one", workdir=str(workdir), nodes=1), nodes=1)
    many = check_workdir(make_profile(name="many", workdir=str(workdir), nodes=4), nodes=4)
    assert one.status == OK and "tmpfs" in one.found and "will be created" in one.found
    assert many.status == WARN and "node-local" in many.found and "shared filesystem" in many.fix
    assert not workdir.parent.exists()  # checking creates nothing


def test_workdir_with_an_unset_variable_fails_naming_it(make_profile, tmp_path, monkeypatch):
    monkeypatch.delenv("LARSCTL_DOCTOR_UNSET", raising=False)
    profile = make_profile(name="unset", workdir="$LARSCTL_DOCTOR_UNSET/larsctl")
    row = check_workdir(profile, nodes=1)
    assert row.status == FAIL and row.found == "$LARSCTL_DOCTOR_UNSET/larsctl: $LARSCTL_DOCTOR_UNSET not set here"
    assert row.fix.startswith("export LARSCTL_DOCTOR_UNSET=")
    assert row.fix.endswith(f"write the path out in workdir: of {profile.source}")  # the user's own file
    monkeypatch.setenv("LARSCTL_DOCTOR_UNSET", str(tmp_path))
    assert check_workdir(profile, nodes=1).status == OK


def test_existing_workdir_is_really_written(make_profile, tmp_path):
    workdir = tmp_path / "runs"
    workdir.mkdir()
    row = check_workdir(make_profile(name="exists", workdir=str(workdir)), nodes=1)
    assert row.status == OK and row.found.startswith(f"{workdir}: exists, writable")
    assert list(workdir.iterdir()) == []  # the test file is gone again
