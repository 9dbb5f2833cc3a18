"""Real job directories for the report tests: event files written by torch's
SummaryWriter (as the trainer does), metrics.jsonl and job.yaml in the
contract's layout.  The curves are simple closed forms so tests can state the
values they expect."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from larsctl.planning.spec import resolve_job

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


def val_top1(step: int, batch: int) -> float:
    return 0.5 + 0.4 * (1 - math.exp(-step / 30)) - batch / 10_000


def write_run(root: Path, batch: int = 64, steps_per_epoch: int = 10, epochs: int = 3, gpus: int = 2,
              tensorboard: bool = True, jsonl: bool = True, job_yaml: bool = True,
              optimizer: str = "lars", noise_scale=None) -> Path:
    """A finished job directory: one train record per step, one val record per epoch, 1 s per step.

    ``noise_scale``: step -> B_simple (or None: not defined at that step), written as the
    trainer writes it (the record's ``noise_scale``, TensorBoard's train/noise_scale)."""
    from torch.utils.tensorboard import SummaryWriter

    root.mkdir(parents=True)
    (root / "tensorboard").mkdir()
    writer = SummaryWriter(str(root / "tensorboard")) if tensorboard else None
    lines = [{"kind": "event", "time": T0, "event": "start", "step": 0, "epoch": 0.0}]
    total = steps_per_epoch * epochs
    for step in range(1, total + 1):
        train = {"kind": "train", "time": T0 + step, "epoch": step / steps_per_epoch, "step": step,
                 "total_steps": total, "steps_per_epoch": steps_per_epoch,
                 "loss": 2.3 * math.exp(-step / 20), "accuracy": 1 - math.exp(-step / 15),
                 "lr": 4.0 * min(1.0, step / 5), "images_per_sec": 100.0 + batch, "effective_batch": batch}
        if noise_scale is not None:
            train["noise_scale"] = noise_scale(step)
        lines.append(train)
        if writer:
            for key in ("loss", "accuracy", "lr", "images_per_sec"):
                writer.add_scalar(f"train/{key}", train[key], step)
            if train.get("noise_scale") is not None:
                writer.add_scalar("train/noise_scale", train["noise_scale"], step)
        if step % steps_per_epoch == 0:
            val = {"kind": "val", "time": T0 + step + 0.5, "epoch": step / steps_per_epoch, "step": step,
                   "loss": 1.0 / step, "accuracy": val_top1(step, batch), "top5": 0.9 + step / 1000}
            lines.append(val)
            if writer:
                for key in ("loss", "accuracy", "top5"):
                    writer.add_scalar(f"val/{key}", val[key], step)
    lines.append({"kind": "event", "time": T0 + total + 1, "event": "done", "step": total,
                  "epoch": float(epochs)})
    if writer:
        writer.close()
    if jsonl:
        (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if job_yaml:
        # What larsctl writes for a small job, with the batch numbers of this run put in.
        spec = resolve_job("local", REPO / "jobs" / "demo.yaml", name=root.name, trainer={"base_op": optimizer},
                           base_lr=2 ** 2.5, warmup_epochs=10 / 2 ** 6, epsilon=1e-5, lr_rule="sqrt",
                           epochs=epochs).to_dict()
        spec["plan"].update(nodes=1, gpus=gpus, gpus_per_node=gpus, per_gpu_batch=batch // gpus,
                            batches_per_allreduce=1, effective_batch=batch)
        spec["trainer"].update(batch_size=batch // gpus)
        (root / "job.yaml").write_text(yaml.safe_dump(spec))
    return root


@pytest.fixture
def make_run(tmp_path):
    def make(name: str, **kwargs) -> Path:
        return write_run(tmp_path / "runs" / name, **kwargs)

    return make
