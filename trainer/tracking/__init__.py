"""One experiment-tracker run (MLflow or W&B) per job, across every requeue and resume.

Standard library only at import: mlflow and wandb are imported when a run is opened,
in rank 0's side thread (trainer.tracking.sender) or by larsctl at submit.

What lives where, in the job directory (the trainer's out dir):

    job.yaml             tracking:  how to reach the tracker (:class:`TrackingSettings`)
    tracking/run.json    the run: backend, id, experiment, group, name, params, tags; written
                         once, at submit (trainer.tracking.identity), or by the first segment
                         that reaches the tracker when submit could not
    tracking/sent.json   how far the tracker durably has the metrics: {"through": [step, order]}
    tracking/wandb/      W&B's own run directories (``wandb sync`` reads them), unless ``dir``

The metrics come from metrics.jsonl, which is the buffer: a segment sends the records
after ``through`` in file order and skips any at or below it, so the steps that a resume
from an older checkpoint trains again are never sent twice, and values held while the
tracker was down or its disk full go out when it is back (or in the next segment, or with
``python -m trainer.tracking sync JOB_DIR``).  The tracker never stops training: any error
is one warning on rank 0's stderr, and the values wait.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

BACKENDS = ("mlflow", "wandb")
MODES = ("offline", "online")
DEFAULT_EXPERIMENT = "larsctl"
# The pip extra that installs each backend's library: pip install 'larsctl[mlflow]'.
LIBRARIES = {"mlflow": "mlflow", "wandb": "wandb"}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[A-Za-z][A-Za-z0-9+.-]*:[^\\/]")
_NAME = re.compile(r"[A-Za-z0-9_.:/ -]{1,128}")


class TrackingError(ValueError):
    """A ``tracking:`` value or ``--track`` flag that is not allowed; the message names the field."""


@dataclass(frozen=True)
class TrackingSettings:
    """How a job reaches its tracker (the ``tracking:`` section of a recipe and of job.yaml).

    backend     mlflow or wandb
    uri         mlflow: a tracking URI (http(s)://host:port, sqlite:///..., databricks...) or a
                local directory (its ``mlflow.db`` and ``artifacts/``); not for wandb
    mode        wandb: offline (the default: nodes without internet; ``wandb sync`` later) or online
    experiment  the MLflow experiment / W&B project (default larsctl); a sweep's jobs go to the
                sweep's own experiment (MLflow) or group (W&B)
    entity      wandb: the team or user (default: the logged-in one)
    dir         wandb: where W&B writes its run directories (default: <job dir>/tracking)
    """

    backend: str
    uri: str | None = None
    mode: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    entity: str | None = None
    dir: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "tracking") -> TrackingSettings:
        if not isinstance(data, Mapping):
            raise TrackingError(f"{where}: expected a mapping with backend: mlflow|wandb")
        known = [f for f in cls.__dataclass_fields__]
        for key in data:
            if key not in known:
                raise TrackingError(f"{where}: unknown field {key!r} (expected {', '.join(known)})")
        backend = data.get("backend")
        if backend not in BACKENDS:
            raise TrackingError(f"{where}.backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        values = {k: v for k, v in data.items() if v is not None}
        for key, value in values.items():
            if not isinstance(value, str) or not value.strip():
                raise TrackingError(f"{where}.{key}: expected a non-empty string, got {value!r}")
        settings = cls(**values)
        settings._check(where)
        return settings

    def _check(self, where: str) -> None:
        if self.backend == "mlflow":
            if self.uri is None:
                raise TrackingError(f"{where}.uri: mlflow needs a tracking URI or a local directory "
                                    "(e.g. http://mlflow.example:5000 or ~/mlruns)")
            extra = [k for k in ("mode", "entity", "dir") if getattr(self, k) is not None]
            if extra:
                raise TrackingError(f"{where}.{extra[0]}: only for wandb (mlflow takes uri and experiment)")
        else:
            if self.uri is not None:
                raise TrackingError(f"{where}.uri: only for mlflow (wandb takes mode, entity, dir, experiment)")
            if self.mode is not None and self.mode not in MODES:
                raise TrackingError(f"{where}.mode: expected offline or online, got {self.mode!r}")
        if not _NAME.fullmatch(self.experiment):
            raise TrackingError(f"{where}.experiment: expected up to 128 letters, digits and _.:/- "
                                f"(got {self.experiment!r})")

    @property
    def offline(self) -> bool:
        return self.backend == "wandb" and self.mode != "online"

    @property
    def local_dir(self) -> str | None:
        """mlflow: the directory of a local store (a URI without a scheme), else None."""
        if self.backend != "mlflow" or self.uri is None or _SCHEME.match(self.uri):
            return None
        return self.uri

    def absolute(self, expand=os.path.expanduser) -> TrackingSettings:
        """Paths (a local mlflow store, wandb's dir) expanded with ``expand`` and made absolute:
        the job runs elsewhere than where it was submitted from."""
        out = self
        if self.local_dir is not None:
            out = replace(out, uri=os.path.abspath(expand(self.uri)))
        if self.dir is not None:
            out = replace(out, dir=os.path.abspath(expand(self.dir)))
        return out

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """A few words for messages: ``mlflow at http://...`` or ``wandb (offline)``."""
        if self.backend == "mlflow":
            return f"mlflow at {self.uri}"
        return f"wandb ({'offline' if self.offline else 'online'})"


def parse_track(text: str, where: str = "--track") -> dict[str, str] | None:
    """``mlflow:URI``, ``wandb``, ``wandb:offline``, ``wandb:online`` as a ``tracking:`` mapping
    (backend and its one setting); ``off`` or ``none``: None (no tracking)."""
    name, sep, rest = text.strip().partition(":")
    if name in ("off", "none") and not sep:
        return None
    if name == "mlflow" and rest.strip():
        return {"backend": "mlflow", "uri": rest.strip()}
    if name == "wandb" and (not sep or rest in MODES):
        return {"backend": "wandb", **({"mode": rest} if sep else {})}
    raise TrackingError(f"{where} {text!r}: expected mlflow:URI (a tracking URI or a local directory), "
                        "wandb, wandb:offline, wandb:online or off")


def merge(base: Mapping[str, Any] | None, flag: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``--track`` mapping over a recipe's ``tracking:``: the flag's backend and setting, and the
    recipe's other fields where they belong to the same backend."""
    if not flag:
        return {}
    kept = dict(base or {}) if (base or {}).get("backend") == flag["backend"] else {}
    return {**kept, **flag}


def missing_library(backend: str) -> str | None:
    """The message for a backend whose library this Python cannot import, else None."""
    import importlib.util
    import sys

    if importlib.util.find_spec(LIBRARIES[backend]) is not None:
        return None
    return (f"tracking.backend {backend}: needs the {LIBRARIES[backend]} package, which {sys.executable} "
            f"does not have: pip install 'larsctl[{backend}]'")
