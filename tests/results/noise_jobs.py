"""Job directories for the ``larsctl noise`` and ``plan --from-noise`` tests: the job.yaml larsctl
writes for the digits demo (ResNet-18, batch 256 = 2 workers x 64 x 2, base LR 2.0 and warmup 1
pinned by the recipe, LEGW rule) and train records with the noise-scale fields written by hand."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from larsctl.planning.spec import resolve_job

REPO = Path(__file__).resolve().parents[2]
DIGITS_TRAIN = 1437  # what the trainer logs as gns_data_size for digits


def train_record(step: int, total: int, *, sgd=300.0, lars=None, data_size=DIGITS_TRAIN, gns_steps=1,
                 batch=256) -> dict:
    return {"kind": "train", "step": step, "total_steps": total, "epoch": step / 5, "steps_per_epoch": 5,
            "loss": 1.0, "lr": 2.0, "effective_batch": batch, "time": float(step), "images_per_sec": 100.0,
            "noise_scale": sgd, "noise_scale_lars": lars, "gns_steps": gns_steps, "gns_b_small": 64,
            "gns_b_big": batch, "gns_data_size": data_size}


def write_job(root: Path, steps: int = 200, *, optimizer: str | None = "lars", recipe: str | None = "jobs/demo.yaml",
              val: list[tuple[int, float]] = (), trainer: dict | None = None, **record) -> Path:
    """A job directory: job.yaml (``recipe`` recorded as given, relative by default, as a submit from
    the repository writes it) and ``steps`` train records, one per step, plus (step, accuracy) validations."""
    root.mkdir(parents=True)
    options = {**({"base_op": optimizer} if optimizer else {}), **(trainer or {})}
    spec = resolve_job("local", REPO / "jobs" / "demo.yaml", name=root.name, trainer=options).to_dict()
    if not optimizer:  # as a recipe without base_op writes it: the trainer's default then
        spec["trainer"].pop("base_op", None)
    spec["job"]["recipe"] = recipe
    (root / "job.yaml").write_text(yaml.safe_dump(spec))
    lines = [train_record(s, steps, **record) for s in range(1, steps + 1)]
    lines += [{"kind": "val", "step": s, "loss": 1.0, "accuracy": acc} for s, acc in val]
    lines.sort(key=lambda r: (r["step"], r["kind"] == "val"))
    (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root
