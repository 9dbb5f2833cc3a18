"""The report records and the thin command around them."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from larsctl.cli import COMMANDS, cli
from larsctl.commands.doctor import doctor
from larsctl.doctor import Report, render
from larsctl.doctor.report import fail, ok
from larsctl.doctor.runner import PROBE_TIMEOUT_S


def test_help_has_an_example_through_the_lazy_group():
    assert COMMANDS["doctor"] == "larsctl.commands.doctor:doctor"
    r = CliRunner().invoke(cli, ["doctor", "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and "larsctl doctor --cluster" in r.output
    assert "--timeout SECONDS" in r.output


def test_the_timeout_default_is_the_probes():
    (option,) = [p for p in doctor.params if p.name == "timeout"]
    assert option.default == PROBE_TIMEOUT_S


def test_the_command_module_imports_nothing_heavy():
    """`larsctl --help` imports every command module: doctor's must stay light."""
    code = ("import sys, larsctl.commands.doctor; "
            "print(sorted(m for m in ('torch', 'pydantic', 'yaml', 'larsctl.doctor') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_render_puts_the_fix_under_its_row():
    report = Report("c", None, None, (ok("python", "3.11"), fail("workdir", "/x: no", "mkdir it")))
    text = render(report)
    lines = text.splitlines()
    assert "workdir" in lines[2] and lines[3].strip() == "fix: mkdir it"
    assert report.exit_code == 1 and report.to_dict()["counts"] == {"ok": 1, "warn": 0, "FAIL": 1}
