"""A sweep's own record: ``<workdir>/sweeps/<id>/sweep.json``, indexed by the job registry.

sweep.json holds the definition (grid, target, protocol), every point with its job id once
the job exists, every job array submitted (its scheduler id, script, tasks file and jobs) and
the submit state: ``creating`` (points without a job may remain), ``created`` (every point has
a job; some may not be submitted) or ``submitted``.  It is written atomically before any job is
submitted and after every step of a submission, so a submission that stopped half way leaves
a sweep ``larsctl sweep resume`` completes.  The registry's sweeps table indexes it; ``larsctl
jobs --rebuild <sweep dir>`` puts a lost index entry (and the sweep's jobs) back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from larsctl.errors import UserError
from larsctl.facts import jobdir
from larsctl.facts.sweepdir import SweepPaths, sweep_of_job_dir
from larsctl.jobs.registry import Registry, record_from_job_dir, save_copy
from larsctl.jobs.sweep_grid import SweepDefinition, SweepPoint

CREATING, CREATED, SUBMITTED = "creating", "created", "submitted"
FORMAT = 1


@dataclass(frozen=True)
class SweepFile:
    id: str
    paths: SweepPaths
    definition: SweepDefinition
    points: tuple[dict, ...] = ()   # SweepPoint fields and "job": its job id (None until created)
    arrays: tuple[dict, ...] = ()   # {"scheduler_id", "script", "tasks", "jobs": [job ids in task order]}
    state: str = CREATING
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "id": self.id, "created": self.created, "state": self.state,
                "definition": self.definition.to_dict(), "points": list(self.points),
                "arrays": list(self.arrays)}

    def save(self) -> SweepFile:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        jobdir.write_json(self.paths.sweep_json, self.to_dict())
        return self

    def with_points(self, points: list[SweepPoint]) -> SweepFile:
        """``points`` added (without jobs yet): the sweep is creating again."""
        return replace(self, points=(*self.points, *({**p.to_dict(), "job": None} for p in points)),
                       state=CREATING)

    def with_job(self, label: str, job_id: str) -> SweepFile:
        points = tuple({**p, "job": job_id} if SweepPoint(**_fields(p)).label == label else p for p in self.points)
        return replace(self, points=points)

    def without_job(self) -> list[SweepPoint]:
        return [SweepPoint(**_fields(p)) for p in self.points if not p.get("job")]

    def labels(self) -> dict[str, str]:
        """Job id -> its point's label (b64-lars-lr2-s1)."""
        return {p["job"]: SweepPoint(**_fields(p)).label for p in self.points if p.get("job")}

    def job_ids(self) -> list[str]:
        return [p["job"] for p in self.points if p.get("job")]


def _fields(point: dict) -> dict:
    return {k: point[k] for k in ("batch", "optimizer", "lr", "seed")}


def read(path: Path) -> SweepFile:
    """The sweep.json at ``path``; UserError naming the file when it is not one."""
    try:
        data = jobdir.read_json(path)
        return SweepFile(id=data["id"], paths=SweepPaths(Path(path).parent),
                         definition=SweepDefinition.from_dict(data["definition"]),
                         points=tuple(data["points"]), arrays=tuple(data["arrays"]), state=data["state"],
                         created=data["created"])
    except FileNotFoundError:
        raise UserError(f"{path}: no such sweep file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a larsctl sweep file: {exc}") from None


def load(registry: Registry, sweep_id: str) -> SweepFile:
    """The sweep file of a recorded sweep (UserError for an unknown id or a lost directory)."""
    directory = registry.sweep_dir(sweep_id)
    if not directory:
        raise UserError(f"sweep {sweep_id} was recorded before sweeps had a sweep.json: nothing to resume")
    return read(SweepPaths(Path(directory)).sweep_json)


def index(registry: Registry, sweep: SweepFile) -> None:
    registry.put_sweep(sweep.id, sweep.definition.to_dict(), str(sweep.paths.root), sweep.created)


def rebuild(registry: Registry, directory: Path) -> list[str]:
    """``jobs --rebuild DIR``: a job directory's record (and its sweep's index entry, when its sweep
    is not known), or a sweep directory's index entry and the records of its jobs whose
    directories are still there.  Returns what was rebuilt, a line each."""
    directory = Path(directory)
    if SweepPaths(directory).sweep_json.is_file():
        sweep = read(SweepPaths(directory.resolve()).sweep_json)
        index(registry, sweep)
        dirs = [d for d in (sweep.paths.workdir / job_id for job_id in sweep.job_ids()) if d.is_dir()]
        return [f"rebuilt sweep {sweep.id} from {sweep.paths.root}",
                *(_rebuild_job(registry, d, sweep.id) for d in dirs)]
    line = _rebuild_job(registry, directory)
    record = record_from_job_dir(directory)
    paths = sweep_of_job_dir(Path(record.job_dir), record.sweep) if record.sweep else None
    if paths is None or _known(registry, record.sweep) or not paths.sweep_json.is_file():
        return [line]
    index(registry, read(paths.sweep_json))
    return [line, f"rebuilt sweep {record.sweep} from {paths.root}"]


def _rebuild_job(registry: Registry, directory: Path, sweep_id: str = "") -> str:
    record = record_from_job_dir(directory)
    record = registry.put(replace(record, sweep=sweep_id or record.sweep))
    save_copy(record)
    return f"rebuilt {record.id} from {record.job_dir}"


def _known(registry: Registry, sweep_id: str) -> bool:
    try:
        registry.sweep_dir(sweep_id)
    except UserError:
        return False
    return True
