"""Every command in the README is exercised here.

Fenced ``sh`` blocks after the set-up block run in order, as one bash session
(variables such as $JOB carry over, as they would for a reader typing them), in
a scratch directory that holds the repo's jobs/ and clusters/.  Blocks marked
``sh cluster`` need a real GPU cluster and ``sh interactive`` run until Ctrl-C:
those are syntax-checked and every larsctl subcommand they use must exist.
``python`` blocks run as scripts.  The set-up block (make demo / make test) is
what CI runs, so it is not run again here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    """(language, marker, body) of every fenced block, in README order."""
    text = (REPO / "README.md").read_text()
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in BLOCK.finditer(text)]


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("SCRATCH", None)
    env.pop("IMAGENET_DIR", None)
    env["HOME"] = str(workdir / "home")  # ~ in the README must not touch the real home
    return env


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    for name in ("jobs", "clusters"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "home").mkdir()
    return tmp_path


def test_readme_shell_walkthrough_runs(scratch):
    runnable = [body for lang, marker, body in blocks()[1:] if lang == "sh" and not marker]
    assert len(runnable) >= 6
    script = "set -euo pipefail\n" + "\n".join(runnable)
    r = subprocess.run(["bash", "-c", script], cwd=scratch, env=_env(scratch), capture_output=True,
                       text=True, timeout=1500, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-6000:]}\nstderr:\n{r.stderr[-6000:]}"
    # What the reader is told to look at exists and is what it claims to be.
    assert (scratch / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<img" in (scratch / "report.html").read_bytes()
    assert (scratch / "job.yaml").read_text().startswith("job:")
    assert '"state": "COMPLETED"' in r.stdout  # jobs --state COMPLETED --json listed the demo


def test_readme_cluster_and_interactive_blocks_are_valid(scratch):
    others = [body for lang, marker, body in blocks() if lang == "sh" and marker]
    assert others, "expected blocks marked 'sh cluster' or 'sh interactive'"
    from click.testing import CliRunner

    from larsctl.cli import cli

    for body in others:
        subprocess.run(["bash", "-n", "-c", body], check=True)
        for command in re.findall(r"^larsctl (\w+)", body, re.M):
            result = CliRunner().invoke(cli, [command, "--help"])
            assert result.exit_code == 0, f"larsctl {command}: {result.output}"


def test_readme_python_blocks_run(scratch):
    bodies = [body for lang, _, body in blocks() if lang == "python"]
    assert bodies
    for body in bodies:
        r = subprocess.run([sys.executable, "-c", body], cwd=scratch, env=_env(scratch),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
