"""The ``larsctl`` command line: a root group whose subcommands load lazily.

Each command lives in its own module under ``larsctl.commands`` (Click docs,
"complex applications"); importing torch-free modules only keeps ``larsctl
--help`` and shell completion fast.
"""
from __future__ import annotations

import importlib
import sys

import click

from larsctl import __version__
from larsctl.errors import UserError

# command name -> "module:attribute"
COMMANDS = {
    "clusters": "larsctl.commands.clusters:clusters",
    "plan": "larsctl.commands.plan:plan",
    "submit": "larsctl.commands.submit:submit",
    "script": "larsctl.commands.submit:script",
    "status": "larsctl.commands.status:status",
    "jobs": "larsctl.commands.status:jobs",
    "logs": "larsctl.commands.logs:logs",
    "cancel": "larsctl.commands.control:cancel",
    "resume": "larsctl.commands.control:resume",
    "report": "larsctl.commands.report:report",
    "compare": "larsctl.commands.report:compare",
    "tensorboard": "larsctl.commands.report:tensorboard",
    "doctor": "larsctl.commands.doctor:doctor",
    "data": "larsctl.commands.data:data",
    "noise": "larsctl.commands.noise:noise",
    "sweep": "larsctl.commands.sweep:sweep",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="larsctl")
def cli() -> None:
    """Plan, submit and track large-batch LARS training on HPC clusters.

    \b
    Example:
      larsctl plan --cluster slurm-v100 --target-batch 32768
      larsctl submit --cluster local --recipe jobs/demo.yaml --follow
    """


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="larsctl")
    except UserError as exc:  # raised outside Click's own handling (e.g. at import)
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
