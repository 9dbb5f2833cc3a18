"""Command line of `python -m trainer`: argparse flags + `--config job.yaml`.

Flags are parsed with SUPPRESS defaults so that only the flags a user typed
override the YAML file; defaults come from the option table in trainer.config.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import yaml

from trainer.config import OPTIONS, TrainConfig, resolve
from trainer.errors import BadInput
from trainer.supervisor.causes import FaultSettings, SettingsError

EPILOG = """\
example (2 ranks on CPU, the builtin digits data set, effective batch 2 x 64 x 2 = 256):
  torchrun --nproc-per-node 2 -m trainer --dataset digits --model resnet18 --image-size 32 \\
      --batch-size 64 --batches-per-allreduce 2 --epochs 8 --base-lr 2 --warmup-epochs 2 \\
      --workers 0 --no-cuda --out-dir runs/demo

exit codes: 0 done, 1 failure, 2 bad input (one line on stderr), 65 diverged (non-finite
loss or weights; no checkpoint of them written), 75 stopped on SIGUSR2 after writing a
checkpoint (requeue; a rerun resumes), 143 cancelled on SIGTERM after writing a checkpoint."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line + exit 2, like every other bad input
        raise BadInput(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m trainer", description="The bundled LARS ImageNet trainer (Horovod or "
                     "torch.distributed; resumes from its newest checkpoint).", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="JOB_YAML", help="larsctl job.yaml (its trainer: section, or the "
                        "whole mapping); flags override it.")
    for opt in OPTIONS:
        default = "" if opt.default is None else f" (default: {opt.default})"
        if opt.type is bool:
            parser.add_argument(opt.flag, dest=opt.name, action="store_true", help=opt.help)
        else:
            parser.add_argument(opt.flag, dest=opt.name, type=opt.type, choices=opt.choices,
                                metavar=None if opt.choices else _metavar(opt), help=opt.help + default)
    return parser


def _metavar(opt) -> str:
    if opt.name.endswith("_dir"):
        return "DIR"
    return {int: "N", float: "X"}.get(opt.type, opt.name.split("_")[-1].upper())


def load_config_file(path: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return (trainer options, plan section or {}, faults section or {}) of a job.yaml."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise BadInput(f"--config {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise BadInput(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: expected a mapping, got {type(doc).__name__}")
    section = doc.get("trainer", doc) if "trainer" in doc else doc
    if not isinstance(section, dict):
        raise BadInput(f"{path}: trainer: expected a mapping, got {type(section).__name__}")
    plan = doc.get("plan") if "trainer" in doc else None
    faults = doc.get("faults") if "trainer" in doc else None
    return (dict(section), dict(plan) if isinstance(plan, dict) else {},
            dict(faults) if isinstance(faults, dict) else {})


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, dict[str, Any], FaultSettings]:
    """Return the resolved config, the job's plan section (for the batch-size check) and its
    fault settings (bounds for the heartbeat and the engines' timeouts)."""
    ns = vars(build_parser().parse_args(argv))
    config_path = ns.pop("config", None)
    from_file, plan, faults = ({}, {}, {}) if config_path is None else load_config_file(config_path)
    try:
        settings = FaultSettings.from_dict(faults, f"{config_path}: faults")
    except SettingsError as exc:
        raise BadInput(str(exc)) from None
    return resolve(from_file, ns, source=config_path or "--config"), plan, settings
