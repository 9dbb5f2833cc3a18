"""What a sweep measured: each job's metrics into the scaling analysis (larsctl.results.scaling),
with the jobs' own noise-scale prediction beside the fit, and which LR grids are still open at
an edge (``sweep resume`` grows them: larsctl.jobs.sweep_grid)."""
from __future__ import annotations

from dataclasses import dataclass

from larsctl.errors import UserError
from larsctl.jobs.lifecycle import JobRow, Warn, refresh, spec_of
from larsctl.jobs.registry import Registry
from larsctl.jobs.sweep_grid import BatchGrid, SweepDefinition
from larsctl.results import scaling
from larsctl.results.metrics import read_records
from larsctl.results.steps import SweepRun


@dataclass(frozen=True)
class SweepResult:
    report: scaling.ScalingReport
    rows: tuple[JobRow, ...]

    @property
    def unfinished(self) -> list[str]:
        return [row.record.id for row in self.rows if not row.state.is_terminal]

    def grids(self) -> list[BatchGrid]:
        """Every (optimizer, batch): its LRs, best LR, and whether all its jobs have ended."""
        ended = {}
        for row, run in zip(self.rows, self.report.runs):
            key = (run.optimizer, run.effective_batch)
            ended[key] = ended.get(key, True) and row.state.is_terminal
        return [BatchGrid(o.optimizer.lower(), b.effective_batch, tuple(c.lr for c in b.cells), b.edge,
                          ended[(o.optimizer, b.effective_batch)])
                for o in self.report.optimizers for b in o.batches]


def measure(registry: Registry, sweep_id: str, warn: Warn) -> SweepResult:
    """Steps-to-target of every job of the sweep, the fit per optimizer and the noise-scale
    prediction.  A scheduler that does not answer is said (the jobs keep their last known state);
    a job whose directory is gone is refused, naming it."""
    definition = SweepDefinition.from_dict(registry.sweep(sweep_id))
    rows, errors = refresh(registry, registry.all(sweep=sweep_id))
    for error in errors:
        warn(f"{error}; showing the last known state")
    for row in rows:
        if row.warnings:
            raise UserError(f"sweep {sweep_id}: {row.warnings[0]}; bring it back (then `larsctl jobs --rebuild "
                            f"{row.record.job_dir}`) to report the sweep")
    runs = [_run(row) for row in rows]
    predicted = {opt: scaling.noise_prediction(runs, opt) for opt in definition.optimizers}
    predicted = {opt: pair for opt, pair in predicted.items() if pair[0] is not None}
    try:
        result = scaling.analyse(runs, definition.target,
                                 predicted_b_noise={opt: value for opt, (value, _) in predicted.items()},
                                 predicted_estimator={opt: name for opt, (_, name) in predicted.items()})
    except ValueError as exc:
        raise UserError(f"sweep {sweep_id}: {exc}") from None
    # analyse keeps the runs in order: row i is run i.
    return SweepResult(result, tuple(rows))


def _run(row: JobRow) -> SweepRun:
    spec = spec_of(row.record)
    return SweepRun(job_id=row.record.id, effective_batch=spec.plan.effective_batch,
                    optimizer=spec.trainer["base_op"], lr=spec.plan.base_lr, seed=spec.trainer["seed"],
                    records=read_records(row.record.paths.metrics))
