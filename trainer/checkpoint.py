"""Checkpoints: atomic writes by rank 0, verified loads, keep the last N.

A checkpoint is a plain `torch.save` dict of tensors and plain Python values, so
it loads with `torch.load(weights_only=True)`.  Next to each file a small JSON
sidecar (`<file>.sha256`) records its SHA-256, step and model; a load whose bytes
do not match is reported and the previous checkpoint is used.  Both files are
written to a temporary name in the same directory, fsynced and renamed, and the
directory is fsynced, so a crash never leaves a half-written file under the
final name.

Optional keys (absent in older checkpoints, read with ``state.get``): ``gns``, the gradient
noise scale estimator's sums of every rank (trainer/gns.py), so that a resumed run goes on
with the same moving averages.

RNG: no generator state is stored.  The trainer reseeds torch/numpy/random from
(seed, rank, global step) before every optimizer step and the data order and
augmentation are pure functions of (seed, epoch, index), so (global step, step
in epoch) is all the randomness a resume needs.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.errors import BadInput
from trainer.fsio import TEMP_GLOB, atomic_write, atomic_writer

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_name", "model", "optimizer", "scheduler", "scaler", "epoch",
                 "step_in_epoch", "global_step", "world_size", "batches_per_allreduce", "batch_size", "config")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Loaded:
    path: Path
    state: dict[str, Any]
    skipped: tuple[tuple[str, str], ...] = ()  # (newer checkpoint, why it was not used)


class CheckpointStore:
    """The checkpoints of one job: `pattern` has {step} and/or {epoch} fields."""

    def __init__(self, pattern: str, keep: int, model_name: str):
        self.pattern = pattern
        self.keep = keep
        self.model_name = model_name
        self.glob = re.sub(r"\{[^}]*\}", "*", pattern)

    def path_for(self, step: int, epoch: int) -> Path:
        return Path(self.pattern.format(step=step, epoch=epoch))

    def save(self, state: dict[str, Any]) -> Path:
        """Write atomically, then its sidecar, then delete the oldest beyond `keep`."""
        path = self.path_for(state["global_step"], state["epoch"])
        path.parent.mkdir(parents=True, exist_ok=True)
        # Serialised in memory first: torch.save into a file that fills up reports only
        # "unexpected pos"; a plain write names the real error (no space, quota, I/O).
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getbuffer()
        with atomic_writer(path) as f:
            f.write(data)
        digest = hashlib.sha256(data).hexdigest()
        meta = {"sha256": digest, "step": state["global_step"], "epoch": state["epoch"],
                "model": state["model_name"]}
        atomic_write(Path(f"{path}.sha256"), (json.dumps(meta) + "\n").encode())
        self._prune()
        return path

    def remove_temporaries(self) -> None:
        """Delete temporary files of writes that a crash interrupted (never valid checkpoints)."""
        directory = self.path_for(0, 0).parent
        for tmp in glob.glob(str(directory / TEMP_GLOB)):
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def candidates(self) -> list[Path]:
        """Checkpoint files, newest first (written in step order, so by mtime)."""
        files = [Path(p) for p in glob.glob(self.glob) if not p.endswith(".sha256")]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, str(p)), reverse=True)

    def _prune(self) -> None:
        for old in self.candidates()[self.keep:]:
            for p in (old, Path(f"{old}.sha256")):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass

    def verify_and_load(self, path: Path) -> dict[str, Any]:
        """Load one checkpoint or raise ValueError saying what is wrong with it."""
        side = Path(f"{path}.sha256")
        if side.exists():
            try:
                meta = json.loads(side.read_text())
                expected = meta["sha256"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"unreadable checksum file {side}") from None
            if sha256_file(path) != expected:
                raise ValueError("SHA-256 does not match its .sha256 file (truncated or corrupt)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for damaged archives
            raise ValueError(f"does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        if not isinstance(state, dict):
            raise ValueError("is not a trainer checkpoint (not a dict)")
        missing = [k for k in REQUIRED_KEYS if k not in state]
        if missing:
            raise ValueError(f"is not a trainer checkpoint (missing {', '.join(missing)})")
        if state["format_version"] > FORMAT_VERSION:
            raise ValueError(f"has format {state['format_version']}, newer than this trainer's {FORMAT_VERSION}")
        return state

    def load_latest(self) -> Loaded | None:
        """The newest checkpoint that verifies; damaged ones are reported on stderr and skipped
        (``Loaded.skipped`` says which and why).

        A valid checkpoint of another model is bad input: the job directory belongs
        to a different run.
        """
        skipped: list[tuple[str, str]] = []
        for path in self.candidates():
            try:
                state = self.verify_and_load(path)
            except ValueError as exc:
                print(f"trainer: checkpoint {path} {exc}; trying the previous one", file=sys.stderr, flush=True)
                skipped.append((str(path), str(exc)))
                continue
            if state["model_name"] != self.model_name:
                raise BadInput(f"checkpoint {path} was written for model {state['model_name']}, "
                               f"this run trains {self.model_name} (use another --out-dir)")
            return Loaded(path, state, tuple(skipped))
        return None
