"""A broken profile file is a warning for every command and an error only for one that uses it.

Real files in $LARSCTL_CONFIG_DIR/clusters, the real CLI (CliRunner and a real process).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.config.profiles import ProfileError, list_profiles, load_profile

REPO = Path(__file__).resolve().parents[2]
LARSCTL = Path(sys.executable).parent / "larsctl"
SHIPPED = ["local", "pbs-v100", "slurm-p100", "slurm-v100"]
SYNTAX = "2: YAML syntax error: expected ',' or ']', but got '<stream end>'"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def broken(user_profile):
    """A file with a YAML error (it may define any name) and one with a schema error (name mine)."""
    syntax = user_profile(text="name: [broken\n", filename="typo.yaml")
    schema = user_profile(name="mine", gpu_type="V100")
    return syntax, schema


def schema_error(path: Path) -> str:
    return (f"{path}:5: gpu_type: expected 'V100-16GB', 'V100-32GB', 'P100-12GB', 'P100-16GB', "
            "'A100-40GB', 'A100-80GB', 'H100-80GB' or 'cpu' (got 'V100')")


def test_clusters_list_shows_the_good_ones_and_warns_about_each_bad_one(broken, user_profile):
    syntax, schema = broken
    user_profile(name="good")
    result = run("clusters", "list")
    assert result.exit_code == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == sorted([*SHIPPED, "good"])
    assert result.stderr.splitlines() == [f"Warning: {schema_error(schema)} (profile skipped)",  # by file name
                                          f"Warning: {syntax}:{SYNTAX} (profile skipped)"]


def test_a_command_on_another_profile_runs_with_the_warnings(broken):
    syntax, schema = broken
    result = run("plan", "--cluster", "slurm-v100", "--target-batch", "1024")
    assert result.exit_code == 0, result.stderr
    assert "effective batch    1024" in result.stdout
    assert len(result.stderr.splitlines()) == 2 and str(syntax) in result.stderr


@pytest.mark.parametrize("name", ["mine", "typo"])  # by its name: field, or by its file name
def test_a_command_that_uses_the_broken_profile_is_refused_with_its_one_line(broken, name):
    syntax, schema = broken
    result = run("plan", "--cluster", name, "--target-batch", "1024")
    assert result.exit_code == 2
    assert result.stdout == ""
    expected = schema_error(schema) if name == "mine" else f"{syntax}:{SYNTAX}"
    assert result.stderr.splitlines() == [f"Error: {expected}"]


def test_clusters_validate_still_fails_naming_the_bad_files(broken):
    syntax, schema = broken
    result = run("clusters", "validate")
    assert result.exit_code == 2
    assert sorted(result.stderr.splitlines()) == sorted([f"Error: {schema_error(schema)}",
                                                        f"Error: {syntax}:{SYNTAX}"])
    assert [line.split()[-1] for line in result.stdout.splitlines()] == [f"({n})" for n in SHIPPED]


def test_a_broken_override_of_a_shipped_profile_is_refused_not_replaced(user_profile):
    # local.yaml in the user dir was meant to override the shipped local: using the shipped
    # one silently would hide the mistake, so `local` is refused and left out of the list.
    path = user_profile(text="name: local\nnodes: [1\n", filename="local.yaml")
    with pytest.raises(ProfileError) as info:
        load_profile("local")
    assert info.value.message.startswith(f"{path}:3: YAML syntax error")
    assert "local" not in [p.name for p in list_profiles()]
    assert load_profile("slurm-v100").name == "slurm-v100"


def test_a_duplicate_name_is_a_broken_file_too(user_profile):
    first = user_profile(name="twin", filename="a.yaml")
    second = user_profile(name="twin", filename="b.yaml")
    assert [p.name for p in list_profiles()] == SHIPPED
    with pytest.raises(ProfileError) as info:
        load_profile("twin")
    assert info.value.message == f"{second}:1: name: 'twin' is already defined in {first}"


def test_a_real_process_lists_and_plans_beside_a_broken_file(broken, larsctl_dirs):
    syntax, schema = broken
    env = {**os.environ, "LARSCTL_CONFIG_DIR": str(larsctl_dirs["config"])}
    listed = subprocess.run([str(LARSCTL), "clusters", "list"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "slurm-v100" in listed.stdout and len(listed.stderr.splitlines()) == 2
    refused = subprocess.run([str(LARSCTL), "plan", "--cluster", "mine", "--target-batch", "1024"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [f"Error: {schema_error(schema)}"]
