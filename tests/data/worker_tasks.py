"""Pieces of work for run_tasks' worker processes in test_workers.py (a module of its own:
spawned workers import it by name, tests.data.worker_tasks)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from larsctl.errors import UserError


@dataclass(frozen=True)
class Piece:
    name: str
    folder: Path          # where the piece leaves <name>.pid when it starts, <name>.finished when it ends
    seconds: float = 0    # how long it works (or, with gate, how long it waits for the gate at most)
    gate: Path | None = None
    fails: bool = False


def work(piece: Piece) -> str:
    """Sleep `seconds`; wait for the gate file instead ("released" or "timed out"); or, with
    fails, raise bad input once another piece has started (so one is surely running)."""
    started = piece.folder / f"{piece.name}.pid.tmp"
    started.write_text(str(os.getpid()))
    started.rename(piece.folder / f"{piece.name}.pid")  # whole: the piece may be terminated any time
    deadline = time.monotonic() + piece.seconds
    if piece.fails:
        while not [p for p in piece.folder.glob("*.pid") if p.stem != piece.name] and time.monotonic() < deadline:
            time.sleep(0.01)
        raise UserError(f"{piece.folder / piece.name}: expected a good piece")
    if piece.gate is None:
        time.sleep(piece.seconds)
    while piece.gate is not None and not piece.gate.exists():
        if time.monotonic() > deadline:
            return "timed out"
        time.sleep(0.01)
    (piece.folder / f"{piece.name}.finished").touch()
    return "released" if piece.gate else "slept"
