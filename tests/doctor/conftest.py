"""Helpers for the doctor tests: the real `larsctl` executable, user profiles, trimmed PATHs.

No mocks: a missing tool is a PATH that really lacks it (a directory of symlinks to
everything else on PATH), a broken workdir is a path that really cannot be made.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("larsctl")  # the installed console script
LARSCTL = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "larsctl"]


def write_profile(directory: Path, base: str = "local", **fields) -> Path:
    """``directory/<name>.yaml``: the shipped ``base`` profile with ``fields`` changed."""
    data = yaml.safe_load((REPO / "clusters" / f"{base}.yaml").read_text())
    data.update(fields)
    path = directory / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Doctor:
    """Run ``larsctl doctor`` as a user would and read its rows."""

    REPO = REPO

    def __init__(self, config_dir: Path, tmp_path: Path):
        self.config_dir, self.tmp_path = config_dir, tmp_path

    def start(self, *args: str, path: str | None = None, **popen) -> subprocess.Popen:
        env = dict(os.environ)
        if path is not None:
            env["PATH"] = path
        return subprocess.Popen([*LARSCTL, "doctor", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO, env=env, stdin=subprocess.DEVNULL, **popen)

    @staticmethod
    def finish(proc: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def run(self, *args: str, path: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.finish(self.start(*args, path=path), timeout)

    def json(self, *args: str, path: str | None = None) -> tuple[dict, subprocess.CompletedProcess]:
        r = self.run(*args, "--json", path=path)
        assert r.stdout.strip(), f"no JSON on stdout (exit {r.returncode}); stderr:\n{r.stderr}"
        return json.loads(r.stdout), r

    @staticmethod
    def rows(report: dict) -> dict[str, dict]:
        return {row["name"]: row for row in report["checks"]}

    def write_profile(self, name: str, base: str = "local", **fields) -> str:
        """A user profile in $LARSCTL_CONFIG_DIR/clusters, starting from the shipped ``base`` one."""
        (self.config_dir / "clusters").mkdir(exist_ok=True)
        write_profile(self.config_dir / "clusters", base, name=name, **fields)
        return name

    def path_without(self, *names: str) -> str:
        """A PATH with every command of the current PATH except ``names`` (symlinks in one dir)."""
        directory = self.tmp_path / ("bin-without-" + "-".join(names))
        directory.mkdir()
        seen: set[str] = set(names)
        for entry_dir in os.environ.get("PATH", os.defpath).split(os.pathsep):
            if not entry_dir or not os.path.isdir(entry_dir):
                continue
            for entry in os.scandir(entry_dir):
                if entry.name in seen:
                    continue
                seen.add(entry.name)
                os.symlink(os.path.join(entry_dir, entry.name), directory / entry.name)
        return str(directory)


@pytest.fixture
def doctor(larsctl_dirs, tmp_path) -> Doctor:
    return Doctor(larsctl_dirs["config"], tmp_path)


@pytest.fixture
def make_profile(tmp_path):
    """make_profile(**fields): a profile read from a file, the shipped local one with ``fields``."""
    from larsctl.config.profiles import read_profile

    return lambda **fields: read_profile(write_profile(tmp_path, **fields))


@pytest.fixture(scope="session")
def local_probe():
    """One real probe of this environment (the local profile's), for the rows' logic on other profiles."""
    from larsctl.config.profiles import read_profile
    from larsctl.doctor.runner import ProbeRun

    profile = read_profile(REPO / "clusters" / "local.yaml")
    probe = ProbeRun(profile, {"sections": ["stack", "horovod"],
                               "modules": ["horovod.runner.launch", "torch.distributed.run"]}).result()
    assert probe.data, probe.error
    return probe
