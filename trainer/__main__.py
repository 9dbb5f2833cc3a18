"""`python -m trainer`: parse, run, and map failures onto the documented exit codes."""
from __future__ import annotations

import sys

from trainer.signals import StopFlag

# First of all, before torch loads (seconds on a busy node): a USR2/TERM that the
# batch script sends during start-up must stop the run cleanly, not kill the rank.
_EARLY_STOP_FLAG = StopFlag().install() if __name__ == "__main__" else None

from trainer import exitcodes  # noqa: E402
from trainer.data import DataError  # noqa: E402
from trainer.errors import BadInput  # noqa: E402


def main(argv: list[str] | None = None, stop_flag: StopFlag | None = None) -> int:
    try:
        from trainer.cli import parse_args

        cfg, plan, faults = parse_args(argv)
        from trainer.run import Run

        return Run(cfg, plan, source=_config_source(argv), stop_flag=stop_flag, faults=faults).execute()
    except (BadInput, DataError) as exc:
        print(f"trainer: error: {exc}", file=sys.stderr, flush=True)
        return exitcodes.BAD_INPUT


def _config_source(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(args):
        if a == "--config" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return "--config"


if __name__ == "__main__":
    sys.exit(main(stop_flag=_EARLY_STOP_FLAG))
