"""The trainer config of a plain ``python -m trainer --out-dir DIR`` run, from its checkpoints.

A larsctl job says what it ran in ``job.yaml``; a plain run has no such file, but every
checkpoint it wrote carries its resolved config (trainer/checkpoint.py: the ``config`` key,
plain types).  The newest checkpoint that loads gives it: the ones metrics.jsonl's
checkpoint events name (wherever ``--checkpoint-format`` put them), then those under
``checkpoints/``.  Loaded memory-mapped, so the model's tensors are not read.
"""
from __future__ import annotations

from pathlib import Path

from trainer import outputs


def checkpoint_candidates(job_dir: Path, records: list[dict]) -> list[Path]:
    """Checkpoint files of the run, newest first (each once)."""
    named = [Path(r["path"]) for r in records
             if r.get("kind") == "event" and r.get("event") == "checkpoint" and isinstance(r.get("path"), str)]
    named = [p if p.is_absolute() else Path(job_dir) / p for p in reversed(named)]
    found = sorted(Path(job_dir, outputs.CHECKPOINT_DIR).glob("*.pt"),
                   key=lambda p: (p.stat().st_mtime_ns, str(p)), reverse=True)
    return [p for p in dict.fromkeys([*named, *found]) if p.is_file()]


def plain_run_config(job_dir: Path, records: list[dict]) -> dict:
    """The trainer options of the run in ``job_dir``; {} when no checkpoint loads (none written
    yet, all damaged, or torch not installed where larsctl runs)."""
    candidates = checkpoint_candidates(job_dir, records)
    if not candidates:
        return {}
    try:
        import torch
    except ImportError:
        return {}
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # torch raises many types for damaged archives: try the one before
            continue
        config = state.get("config") if isinstance(state, dict) else None
        if isinstance(config, dict):
            return config
    return {}
