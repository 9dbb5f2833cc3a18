"""The environment rows: the profile's modules, venv and container, through the real probe shell."""
from __future__ import annotations

import subprocess

import pytest

from larsctl.doctor.environment import check_container, check_modules, check_venv
from larsctl.doctor.report import FAIL, OK, WARN, ok
from larsctl.doctor.runner import ProbeRun


def _has_module_command() -> bool:
    r = subprocess.run(["bash", "-lc", "type module"], capture_output=True, text=True, timeout=30)
    return r.returncode == 0


def shell_probe(profile):
    """The real bash -lc probe, no Python sections (fast)."""
    return ProbeRun(profile, {"sections": []}).result()


def test_modules_that_cannot_be_loaded_here_are_a_warning(make_profile):
    if _has_module_command():
        pytest.skip("this machine has a `module` command")
    profile = make_profile(name="mods", modules=["gcc/12.2", "openmpi/4.1"])
    probe = shell_probe(profile)
    (row,) = check_modules(profile, probe)
    assert row.status == WARN and "no `module` command here: gcc/12.2, openmpi/4.1" in row.found
    assert "login node" in row.fix
    assert probe.data["python"]["executable"]  # the probe still ran, without them


def test_a_module_that_does_not_load_fails_naming_it(make_profile, monkeypatch):
    """`module` as clusters pass it to batch jobs: an exported bash function (here a tiny stand-in
    for Lmod that knows one module)."""
    if _has_module_command():
        pytest.skip("this machine has its own `module` command")
    monkeypatch.setenv("BASH_FUNC_module%%", '() {  if [ "$2" = gcc/12.2 ]; then export LOADED_GCC=1; '
                       'else echo "Lmod has detected the following error: unknown module $2" >&2; return 1; fi\n}')
    profile = make_profile(name="mods", modules=["gcc/12.2", "cuda/99"])
    (row,) = check_modules(profile, shell_probe(profile))
    assert row.status == FAIL and row.found.startswith("module load failed for cuda/99: Lmod has")
    good = make_profile(name="good", modules=["gcc/12.2"])
    assert check_modules(good, shell_probe(good)) == [ok("modules", "loaded gcc/12.2")]


def test_venv_and_container_that_are_not_there(make_profile, tmp_path):
    profile = make_profile(name="gone", venv=str(tmp_path / "venv"),
                           container={"runtime": "apptainer", "image": str(tmp_path / "x.sif")})
    (venv,) = check_venv(profile)
    assert venv.status == FAIL and venv.found == f"{tmp_path / 'venv'}: no bin/activate (not a virtual environment)"
    assert venv.fix.endswith(f"or fix venv: in {profile.source}")
    (image,) = check_container(profile)
    assert image.status == FAIL and image.found == f"{tmp_path / 'x.sif'}: not found"
    (tmp_path / "x.sif").write_bytes(b"")
    assert check_container(profile)[0].status == OK
