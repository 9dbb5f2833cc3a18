"""Every job command explains itself with an example (`--help` goes through the lazy group)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from larsctl.cli import cli


@pytest.mark.parametrize("command", ["submit", "script", "status", "jobs", "logs", "cancel", "resume"])
def test_help_has_an_example(command):
    r = CliRunner().invoke(cli, [command, "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and f"larsctl {command}" in r.output
