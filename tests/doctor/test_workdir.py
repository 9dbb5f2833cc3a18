"""The workdir row: exists or can be made, really writable, shared when jobs span nodes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from larsctl.config.profiles import load_profile, shipped_dir, user_dir
from larsctl.doctor.report import FAIL, OK, WARN
from larsctl.doctor.workdir import check_workdir, filesystem_of


def test_a_shipped_profiles_workdir_fix_is_a_profile_of_your_own(doctor, tmp_path, monkeypatch):
    """Shipped profiles are examples (a `git pull` would undo edits): the fix writes a user profile."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    monkeypatch.setenv("LARSCTL_HOME", str(blocker / "home"))  # local's workdir: $LARSCTL_HOME/runs
    report, r = doctor.json("--cluster", "local")
    row = doctor.rows(report)["workdir"]
    assert r.returncode == 1 and row["status"] == "FAIL", row
    shipped = doctor.REPO / "clusters" / "local.yaml"
    user_file = doctor.config_dir / "clusters" / "my-local.yaml"
    assert f"in {shipped}" not in row["fix"]
    assert f"cp {shipped} {user_file}" in row["fix"] and "--cluster my-local" in row["fix"]

    # Following it works: the copy, renamed, with a workdir that can be made.
    user_file.parent.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(shipped.read_text())
    data.update(name="my-local", workdir=str(tmp_path / "runs"))
    user_file.write_text(yaml.safe_dump(data))
    report, _ = doctor.json("--cluster", "my-local")
    row = doctor.rows(report)["workdir"]
    assert row["status"] == "ok" and row["found"].startswith(f"{tmp_path / 'runs'}: will be created")


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


def test_shipped_profile_with_an_unset_variable_is_copied_not_edited(monkeypatch, larsctl_dirs):
    monkeypatch.delenv("SCRATCH", raising=False)
    profile = load_profile("slurm-v100")  # workdir: $SCRATCH/larsctl
    row = check_workdir(profile, nodes=2)
    copy = user_dir() / "my-slurm-v100.yaml"
    assert row.status == FAIL and row.fix.startswith("export SCRATCH=... before running larsctl, or write "
                                                     f"the path out in workdir: of {copy} (a profile of your own")
    assert f"cp {shipped_dir() / 'slurm-v100.yaml'} {copy}, set name: my-slurm-v100 in it" in row.fix
    assert str(copy).startswith(str(larsctl_dirs["config"]))  # $LARSCTL_CONFIG_DIR/clusters


def test_existing_workdir_is_really_written(make_profile, tmp_path):
    workdir = tmp_path / "runs"
    workdir.mkdir()
    row = check_workdir(make_profile(name="exists", workdir=str(workdir)), nodes=1)
    assert row.status == OK and row.found.startswith(f"{workdir}: exists, writable")
    assert list(workdir.iterdir()) == []  # the test file is gone again
