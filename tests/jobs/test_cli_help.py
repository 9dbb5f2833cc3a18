"""Every command explains itself with an example (`--help` goes through the lazy group)."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from larsctl.cli import COMMANDS, cli


def _all_commands() -> list[list[str]]:
    """Every command and subcommand path of the CLI's own table (groups included)."""
    paths = []
    for name in sorted(COMMANDS):
        command = cli.get_command(click.Context(cli), name)
        paths.append([name])
        if isinstance(command, click.Group):
            paths += [[name, sub] for sub in sorted(command.commands)]
    return paths


def test_the_table_is_what_the_cli_lists():
    assert len(COMMANDS) >= 12
    assert cli.list_commands(click.Context(cli)) == sorted(COMMANDS)


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_help_has_an_example(path):
    r = CliRunner().invoke(cli, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output, r.output
    assert f"larsctl {' '.join(path)}" in r.output, r.output
