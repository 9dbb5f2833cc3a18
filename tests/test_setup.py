"""The set-up scripts (.ci/setup.sh, .ci/build-horovod.sh, .ci/lib.sh) fail loudly and early.

A failing command is reported with its file, line and what to do; a missing
prerequisite is one line naming it and how clusters provide it (exit 2), before
anything is installed.  These run the real scripts; only PATH, CXX, VENV and the
wheel cache are bent to create the broken machine.
"""
from __future__ import annotations

import os
import re
import shutil
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


def test_the_python_check_reads_the_minimum_from_pyproject(tmp_path):
    # pyproject.toml's requires-python is the one place: a copy of the scripts beside a
    # pyproject that asks for 3.99 must refuse this interpreter, naming 3.99.
    shutil.copytree(REPO / ".ci", tmp_path / ".ci")
    shutil.copy(REPO / "constraints.txt", tmp_path)
    text = (REPO / "pyproject.toml").read_text()
    assert text.count('requires-python = ">=') == 1
    (tmp_path / "pyproject.toml").write_text(re.sub(r'requires-python = ">=[0-9.]+"',
                                                    'requires-python = ">=3.99"', text))
    r = run_setup("demo", "--no-apt", cwd=tmp_path, env={"VENV": str(tmp_path / "venv"), "CXX": "/bin/false",
                                                         "LARSCTL_WHEEL_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 2, r.stderr
    (line,) = setup_lines(r)
    assert line.startswith("[setup] missing prerequisite: Python 3.99 or newer"), line
    assert not (tmp_path / "venv").exists()


def test_a_bad_argument_is_refused():
    r = run_setup("demo", "--frobnicate")
    assert r.returncode == 2
    assert "unknown argument '--frobnicate'" in r.stderr


def _cached_horovod_wheel() -> Path | None:
    """The wheel the suite's own set-up built or found (CI builds it into a fresh cache)."""
    roots = [os.environ.get("LARSCTL_WHEEL_CACHE"), Path.home() / ".cache" / "larsctl" / "wheels"]
    for root in filter(None, roots):
        found = sorted(Path(root).glob("torch-*/*/horovod-*.whl"))
        if found:
            return found[-1]
    return None


def _as_user(user: str, argv: list[str], env: dict, cwd: Path, timeout: float = 900):
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_an_unprivileged_user_installs_without_apt_then_doctor_passes():
    """The cluster path, for real, as the unprivileged user ``nobody``: no root, so apt is
    skipped and the prerequisites are checked; a new venv from the machine's own Python
    (Debian's /usr/bin/python3.11, as a module Python would be), pip against
    constraints.txt, the editable install of a copy of this project, Horovod from the
    wheel cache against the MPI on PATH; then ``larsctl doctor --cluster local``.

    To keep it to seconds, the 5 GB of torch, DALI and the rest are not downloaded
    again: the new venv sees the project venv's packages (except larsctl and Horovod,
    which the set-up installs itself) through a .pth file made before the set-up runs.
    """
    import pwd
    import shutil
    import tempfile

    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to become an unprivileged user")
    user = "nobody"
    entry = pwd.getpwnam(user)
    system_python = Path("/usr/bin/python3.11")
    if not system_python.exists():
        pytest.skip("needs the machine's own /usr/bin/python3.11 (pyenv's lives under /root)")
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    wheel = _cached_horovod_wheel()
    # Not under pytest's 0700 tmp dirs: the user must reach it.
    base = Path(tempfile.mkdtemp(prefix="larsctl-unprivileged-"))
    try:
        base.chmod(0o755)
        project, home, shared = base / "larsctl", base / "home", base / "shared-site"
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                               capture_output=True, check=True).stdout.decode().split("\0")
        for name in filter(None, files):
            if (REPO / name).is_file():
                (project / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, project / name)
        home.mkdir()
        shared.mkdir()
        skip = ("horovod", "larsctl", "__editable__", "_distutils_hack", "distutils-precedence",
                "pip", "setuptools", "wheel", "pkg_resources")
        for item in site.iterdir():
            if not item.name.startswith(skip) and item.suffix != ".pth":
                (shared / item.name).symlink_to(item)
        flavour = subprocess.run(["bash", "-c", "source .ci/lib.sh; build_flavour"], cwd=REPO,
                                 capture_output=True, text=True, check=True).stdout.strip()
        cache = home / ".cache" / "larsctl" / "wheels"
        if wheel is not None:
            (cache / wheel.parent.parent.name / flavour).mkdir(parents=True)
            shutil.copy2(wheel, cache / wheel.parent.parent.name / flavour / wheel.name)
        subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(project), str(home)], check=True)
        env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT",
                     "PIP_DEFAULT_TIMEOUT", "HTTPS_PROXY", "https_proxy"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        made = _as_user(user, [str(system_python), "-m", "venv", ".venv"], env, project)
        assert made.returncode == 0, made.stderr
        venv_site = project / ".venv" / "lib" / "python3.11" / "site-packages"
        (venv_site / "larsctl-test-shared.pth").write_text(f"{shared}\n")

        setup = _as_user(user, ["bash", ".ci/setup.sh", "demo"], env, project)
        assert setup.returncode == 0, f"stdout:\n{setup.stdout[-3000:]}\nstderr:\n{setup.stderr[-6000:]}"
        assert "not root and no passwordless sudo: skipping apt" in setup.stderr
        where = _as_user(user, [".venv/bin/python", "-c", "import horovod.torch as h, larsctl; "
                                "print(h.__file__); print(larsctl.__file__)"], env, project)
        hvd_file, larsctl_file = where.stdout.split()
        assert hvd_file.startswith(str(venv_site)), where.stdout  # installed by the set-up, not shared
        assert larsctl_file.startswith(str(project)), where.stdout

        doctor = _as_user(user, [".venv/bin/larsctl", "doctor", "--cluster", "local"],
                          {**env, "LARSCTL_HOME": str(home / "larsctl")}, project, timeout=120)
        assert doctor.returncode == 0, f"stdout:\n{doctor.stdout}\nstderr:\n{doctor.stderr}"
        assert "FAIL" not in doctor.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_cuda_home_is_a_toolkit_not_where_an_nvcc_wrapper_lives(tmp_path):
    # This machine's /usr/local/bin/nvcc is a wrapper script: its parent's parent
    # (/usr/local) is no toolkit, and Horovod's CMake then fails to find cudart.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "include").mkdir()  # like /usr/local/include: a directory, but no CUDA in it
    (bin_dir / "nvcc").write_text("#!/bin/sh\nexec /nowhere/bin/nvcc \"$@\"\n")
    (bin_dir / "nvcc").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    r = subprocess.run(["bash", "-c", "source .ci/lib.sh; cuda_home"], cwd=REPO, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    home = r.stdout.strip()
    assert home == "" or (Path(home) / "include" / "cuda_runtime.h").is_file(), home
    assert home != str(tmp_path)
