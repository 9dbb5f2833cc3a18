"""The tracker's files in the job directory: the run (run.json) and how far it has the metrics
(sent.json), and the run's identity (name, params, tags) derived from the job's job.yaml.

Both files are written whole (temp file, fsync, rename): a segment killed mid-write leaves
the previous version.  run.json is written once (at submit, or by the first segment that
reaches the tracker); sent.json by rank 0 of the running segment only.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from trainer.fsio import atomic_write

DIR = "tracking"
RUN_FILE = "run.json"
SENT_FILE = "sent.json"
# A point's place in the order the tracker receives them: a step's train record, then its val record.
ORDER = {"train": 0, "val": 1}
Key = tuple[int, int]  # (step, order)


def tracking_dir(job_dir: Path | str) -> Path:
    return Path(job_dir) / DIR


@dataclass(frozen=True)
class RunInfo:
    """One job's tracker run.  ``run_id`` is None until the tracker has created it."""

    backend: str
    name: str
    experiment: str
    run_id: str | None = None
    experiment_id: str | None = None  # mlflow
    group: str | None = None          # the sweep the job belongs to
    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)

    def with_run(self, run_id: str, experiment_id: str | None = None) -> RunInfo:
        return replace(self, run_id=run_id, experiment_id=experiment_id)

    def write(self, job_dir: Path | str) -> None:
        directory = tracking_dir(job_dir)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / RUN_FILE, json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def read(cls, job_dir: Path | str) -> RunInfo | None:
        """The job's run.json; None when it is missing or not readable as one."""
        try:
            data = json.loads((tracking_dir(job_dir) / RUN_FILE).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def read_sent(job_dir: Path | str) -> Key | None:
    """The last (step, order) the tracker durably has; None: nothing yet."""
    try:
        through = json.loads((tracking_dir(job_dir) / SENT_FILE).read_text())["through"]
        return int(through[0]), int(through[1])
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return None


def write_sent(job_dir: Path | str, through: Key) -> None:
    atomic_write(tracking_dir(job_dir) / SENT_FILE, json.dumps({"through": list(through)}) + "\n")


# -- the run's identity, from job.yaml ------------------------------------------------------------
def split_text(plan: Mapping[str, Any]) -> str | None:
    """nodes x GPUs per node x per-GPU batch x accumulation (as ``larsctl status`` shows a shape)."""
    keys = ("nodes", "gpus_per_node", "per_gpu_batch", "batches_per_allreduce")
    if any(plan.get(k) is None for k in keys):
        return None
    return "x".join(str(plan[k]) for k in keys)


def params_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The plan as parameters: effective batch, split, LR rule and numbers, warmup, cluster, GPU type."""
    plan, cluster, trainer = doc.get("plan") or {}, doc.get("cluster") or {}, doc.get("trainer") or doc
    params = {key: plan.get(key) for key in (
        "effective_batch", "nodes", "gpus", "gpus_per_node", "per_gpu_batch", "batches_per_allreduce",
        "lr_rule", "base_lr", "warmup_epochs", "epsilon", "epochs", "model", "precision")}
    params.update(split=split_text(plan), cluster=cluster.get("name"), gpu_type=cluster.get("gpu_type"),
                  engine=cluster.get("engine"), optimizer=trainer.get("base_op"))
    if params["model"] is None:  # a bare trainer config: what the trainer section says
        params.update(model=trainer.get("model"), base_lr=trainer.get("base_lr"),
                      warmup_epochs=trainer.get("warmup_epochs"), epochs=trainer.get("epochs"))
    return {k: v for k, v in params.items() if v is not None}


def tags_of(params: Mapping[str, Any], group: str | None) -> dict[str, str]:
    """What a sweep's runs are told apart by: batch, LR and optimizer (and the sweep)."""
    tags = {"batch": params.get("effective_batch"), "lr": params.get("base_lr"),
            "optimizer": params.get("optimizer"), "sweep": group}
    return {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in tags.items() if v is not None}


def identity(doc: Mapping[str, Any], backend: str, name: str, experiment: str,
             group: str | None = None) -> RunInfo:
    """The run a job gets (no id yet): in a sweep, the sweep's experiment (mlflow) or group (wandb)."""
    params = params_of(doc)
    if group and backend == "mlflow":
        experiment = group
    return RunInfo(backend=backend, name=name, experiment=experiment, group=group, params=params,
                   tags=tags_of(params, group))
