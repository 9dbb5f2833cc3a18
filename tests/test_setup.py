"""The set-up scripts (.ci/setup.sh, .ci/build-horovod.sh, .ci/lib.sh) fail loudly and early.

A failing command is reported with its file, line and what to do; a missing
prerequisite is one line naming it and how clusters provide it (exit 2), before
anything is installed.  These run the real scripts; only PATH, CXX, VENV and the
wheel cache are bent to create the broken machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_setup(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    merged = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(cwd / ".ci" / "setup.sh"), *args], cwd=cwd, env=merged,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def path_without(tmp_path: Path, *names: str) -> str:
    """A PATH with every command of /usr/bin and /bin except ``names`` (prefixes)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for entry in Path(directory).iterdir():
            if entry.name.startswith(names) or (bin_dir / entry.name).exists():
                continue
            (bin_dir / entry.name).symlink_to(entry)
    return str(bin_dir)


def setup_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("[setup]")]


def test_a_missing_wheel_cache_directory_is_an_empty_cache():
    # The bug a new user met: `find` on a cache directory that did not exist yet
    # ended the script (set -e) with no message.
    r = subprocess.run(["bash", "-c", 'source .ci/lib.sh; w=$(find_cached_wheel /nonexistent/cache 0.28.1); '
                        'echo "wheel=[$w]"'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wheel=[]"


def test_missing_mpicc_is_one_line_with_the_fix_before_anything_is_installed(tmp_path):
    venv = tmp_path / "venv"
    r = run_setup("demo", "--no-apt", env={"PATH": path_without(tmp_path, "mpicc", "mpic++", "mpicxx"),
                                          "VENV": str(venv)})
    assert r.returncode == 2, r.stderr
    lines = setup_lines(r)
    assert len(lines) == 1, r.stderr
    assert "missing prerequisite: mpicc" in lines[0] and "module load openmpi" in lines[0]
    assert not venv.exists()


def test_a_compiler_too_old_for_torch_is_named_when_horovod_must_be_built(tmp_path):
    r = run_setup("demo", "--no-apt", env={"CXX": "/bin/false", "VENV": str(tmp_path / "venv"),
                                          "LARSCTL_WHEEL_CACHE": str(tmp_path / "empty-cache")})
    assert r.returncode == 2, r.stderr
    (line,) = setup_lines(r)
    assert "C++20" in line and "/bin/false" in line and "module load gcc" in line


def test_a_failing_command_is_reported_with_its_line_and_what_to_do():
    r = run_setup("demo", "--no-apt", env={"VENV": "/proc/no-venv-here"})
    assert r.returncode == 1
    lines = setup_lines(r)
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1, r.stderr
    assert ".ci/setup.sh:" in failed[0] and "-m venv" in failed[0]
    assert any(line.startswith("[setup] what to do:") and "/proc/no-venv-here" in line for line in lines)


def test_a_bad_argument_is_refused():
    r = run_setup("demo", "--frobnicate")
    assert r.returncode == 2
    assert "unknown argument '--frobnicate'" in r.stderr

