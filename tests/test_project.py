"""The promises the README makes about set-up and CI."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _setup_commands() -> list[str]:
    """The commands of the README's first fenced block (comments dropped)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S)
    assert block, "README.md must open with a fenced block of set-up commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_opens_with_the_two_setup_commands():
    head = (REPO / "README.md").read_text().split("```")[0]
    assert head.count("\n") <= 3, "the set-up commands must be the README's first lines"
    assert _setup_commands() == ["make demo", "make test"]


def test_ci_runs_exactly_the_readme_test_command():
    test_command = _setup_commands()[1]
    ci_lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert test_command in ci_lines


def test_make_targets_install_before_running():
    # Under `make test` this runs inside make: drop the parent's make variables.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PYTEST_ARGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", "demo", "test"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == ".ci/setup.sh demo"
    assert "larsctl submit --cluster local --recipe jobs/demo.yaml --follow" in lines[1]
    assert ".ci/setup.sh test" in lines
    assert lines[-1].split() == [".venv/bin/python", "-m", "pytest"]


def test_the_minimum_python_is_pyprojects_everywhere():
    """pyproject.toml's requires-python is the one place: .ci/lib.sh reads it for the set-up's
    check, and doctor's python row compares against the same version."""
    import tomllib

    from larsctl.doctor.stack import MIN_PYTHON

    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert re.fullmatch(r">=\d+\.\d+", required), required
    minimum = required.removeprefix(">=")
    r = subprocess.run(["bash", "-c", "source .ci/lib.sh; min_python"], cwd=REPO, capture_output=True,
                       text=True)
    assert (r.returncode, r.stdout.strip()) == (0, minimum), r.stderr
    assert ".".join(map(str, MIN_PYTHON)) == minimum
    assert "3, 10" not in (REPO / ".ci" / "setup.sh").read_text()  # no second copy in the script


def test_constraints_pin_every_dependency():
    """A fresh machine must get the tested versions: every runtime and test
    dependency named in pyproject.toml is pinned in constraints.txt."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + project["optional-dependencies"]["test"]
    pinned = {line.split("==")[0].strip().lower()
              for line in (REPO / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    missing = [n for n in names if re.split(r"[<>=\[ ]", n)[0].lower() not in pinned]
    assert not missing, f"not pinned in constraints.txt: {missing}"


def test_horovod_was_built_with_pytorch_mpi_and_gloo():
    out = subprocess.run([str(Path(sys.executable).parent / "horovodrun"), "--check-build"],
                         capture_output=True, text=True, check=True).stdout
    for line in ("[X] PyTorch", "[X] MPI", "[X] Gloo"):
        assert line in out, out
