"""Helpers of the data tests (imported as tests.data.helpers).

The `data` group is invoked as the real CLI: in-process through click's CliRunner (``cli``)
or as a subprocess (``run_cli``: ``python -c "from larsctl.commands.data import data; data()"``),
until larsctl/cli.py registers it as ``larsctl data``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from larsctl.commands.data import data

CLI = [sys.executable, "-c", "from larsctl.commands.data import data; data()"]
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 8, 3
TRAIN_SHARDS, VAL_SHARDS = 4, 2


def cli(*args) -> Result:
    return CliRunner().invoke(data, [str(a) for a in args], catch_exceptions=False)


def run_cli(*args, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The command as a real process; env: variables to add to this process's environment."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=300, **kwargs)


def one_line(result) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root except larsctl's own state, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".larsctl" not in p.parts}
