"""The job history the planner learns from: finished jobs' measured images/s on a profile.

I/O, thin: ``measured_throughput`` finds finished jobs through the registry and reads the
job.yaml and metrics.jsonl (``read_records``, the one reader of that file) of the newest
first, until NEWEST match, each job once per process; the figures are pooled by the pure
larsctl.planning.measured.  Callers pass ``measured_throughput`` to ``resolve_job``.
"""
from __future__ import annotations

from larsctl.planning.measured import NEWEST, Measured, Run, job_rate, pool

_RUNS: dict[tuple[str, float], Run | None] = {}  # (job_dir, updated) -> its figure


def _read_run(record) -> Run | None:
    """A finished job's figure from its job.yaml and metrics.jsonl; None when unreadable."""
    from larsctl.errors import UserError
    from larsctl.planning.spec import JobSpec
    from larsctl.results.metrics import read_records

    paths = record.paths
    try:
        spec = JobSpec.read(paths.job_yaml)
        rate = job_rate(read_records(paths.metrics))
    except (OSError, UserError):
        return None
    if rate is None:
        return None
    plan = spec.plan
    return Run(record.id, record.cluster, plan.model, int(spec.trainer.get("image_size", 224)),
               plan.precision, plan.gpus, rate)


def finished_runs(profile: str, key: tuple[str, int, str] | None = None) -> list[Run]:
    """Figures of the finished jobs on ``profile``, oldest first (none without a registry).

    With ``key`` (model, image size, precision), only the NEWEST that match: job
    directories are read newest first until that many are found.
    """
    from larsctl.config.env import larsctl_home
    from larsctl.errors import Failure
    from larsctl.jobs.registry import Registry

    if not (larsctl_home() / "jobs.sqlite").exists():  # nothing has run: create nothing
        return []
    try:
        registry = Registry()
        try:
            records = registry.all()
        finally:
            registry.close()
    except Failure:
        return []
    runs: list[Run] = []
    for record in reversed(records):
        if record.cluster != profile or not record.state.is_terminal:
            continue
        cache = (record.job_dir, record.updated)
        if cache not in _RUNS:
            _RUNS[cache] = _read_run(record)
        found = _RUNS[cache]
        if found is not None and key in (None, found.key):
            runs.append(found)
            if key is not None and len(runs) == NEWEST:
                break
    return runs[::-1]


def measured_throughput(profile: str, model: str, image_size: int, precision: str) -> Measured | None:
    """What finished jobs on ``profile`` measured for this model, image size and precision."""
    runs = finished_runs(profile, (model, image_size, precision))
    return pool(runs, profile=profile, model=model, image_size=image_size, precision=precision)
