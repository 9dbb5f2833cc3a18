"""The job records: one SQLite file in the larsctl home, safe under concurrent larsctl processes.

WAL mode lets readers (``larsctl status``) run while a writer submits; every
change is one short ``BEGIN IMMEDIATE`` transaction and the busy timeout makes
a second writer wait instead of failing.  Job ids are ``<name>-<yyyymmdd-hhmmss>-<4 hex>``
and are claimed by the INSERT itself (PRIMARY KEY), so two ``larsctl submit``
at the same second still get distinct ids.

Each record is also copied to ``<job_dir>/job.json`` so the job directory alone
can rebuild it (:func:`record_from_job_dir`).
"""
from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from larsctl.config.env import larsctl_home
from larsctl.errors import Failure, UserError
from larsctl.facts import jobdir
from larsctl.facts.states import JobState

BUSY_TIMEOUT_S = 30.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    cluster TEXT NOT NULL,
    scheduler TEXT NOT NULL,
    scheduler_ids TEXT NOT NULL DEFAULT '[]',
    job_dir TEXT NOT NULL,
    state TEXT NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    sweep TEXT NOT NULL DEFAULT '',
    previous_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    definition TEXT NOT NULL,
    dir TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS scheduler_health (
    name TEXT PRIMARY KEY,
    failing_since REAL NOT NULL,
    error TEXT NOT NULL
);
"""
_FIELDS = ("id", "name", "cluster", "scheduler", "scheduler_ids", "job_dir", "state",
           "restarts", "created", "updated", "sweep", "previous_ids")
_OPTIONAL = {"sweep": "", "previous_ids": []}  # fields newer than some job.json copies


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str
    cluster: str
    scheduler: str
    job_dir: str
    state: JobState = JobState.PENDING
    # One per chain segment and resume, plus the ids PBS requeues resubmitted the job as.
    scheduler_ids: list[str] = field(default_factory=list)
    restarts: int = 0
    created: float = 0.0
    updated: float = 0.0
    sweep: str = ""  # the sweep this job is a point of (larsctl sweep), or ""
    # [scheduler, id] of the runs a job had on the clusters it left (resume --cluster): ended, kept
    # for its history; only scheduler_ids (on its current scheduler) are asked for states.
    previous_ids: list = field(default_factory=list)

    @property
    def paths(self) -> jobdir.JobPaths:
        return jobdir.JobPaths(Path(self.job_dir))

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", JobState(self.state))  # ValueError for an unknown state

    def to_dict(self) -> dict:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_dict(cls, data: dict) -> JobRecord:
        missing = [f for f in _FIELDS if f not in data and f not in _OPTIONAL]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return cls(**{f: data.get(f, _OPTIONAL.get(f)) for f in _FIELDS})


def new_job_id(name: str, now: float | None = None) -> str:
    """``<name>-<yyyymmdd-hhmmss>-<4 hex>``; the name is reduced to a file-name-safe form."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:40] or "job"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{safe}-{stamp}-{secrets.token_hex(2)}"


class Registry:
    """The job database at ``$LARSCTL_HOME/jobs.sqlite``."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else larsctl_home() / "jobs.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "sweep" not in columns:  # a database from before sweeps
                self._db.execute("ALTER TABLE jobs ADD COLUMN sweep TEXT NOT NULL DEFAULT ''")
            if "previous_ids" not in columns:  # a database from before jobs moved between clusters
                self._db.execute("ALTER TABLE jobs ADD COLUMN previous_ids TEXT NOT NULL DEFAULT '[]'")
            if "dir" not in {row[1] for row in self._db.execute("PRAGMA table_info(sweeps)")}:
                self._db.execute("ALTER TABLE sweeps ADD COLUMN dir TEXT NOT NULL DEFAULT ''")  # before sweep.json
        except sqlite3.Error as exc:
            raise Failure(f"cannot open the job database {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _tx(self):
        return _Transaction(self._db, self.path)

    def add(self, record: JobRecord) -> JobRecord:
        """Insert a new record; IntegrityError if its id is taken."""
        now = time.time()
        record = replace(record, created=record.created or now, updated=now)
        with self._tx() as db:
            db.execute(f"INSERT INTO jobs ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})",
                       _row(record))
        return record

    def claim_id(self, name: str, **fields) -> JobRecord:
        """Insert a record under a fresh unique id (retrying on the rare collision)."""
        for _ in range(20):
            job_id = new_job_id(name)
            try:
                return self.add(JobRecord(id=job_id, name=name, **fields))
            except sqlite3.IntegrityError:
                continue
        raise Failure(f"could not find a free job id for {name!r} in {self.path}")

    def put(self, record: JobRecord) -> JobRecord:
        """Insert or replace (used by --rebuild)."""
        record = replace(record, updated=time.time())
        with self._tx() as db:
            db.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(_FIELDS)}) "
                       f"VALUES ({', '.join('?' * len(_FIELDS))})", _row(record))
        return record

    def update(self, job_id: str, **changes) -> JobRecord:
        """Change some fields of one record in one transaction; returns the new record."""
        with self._tx() as db:
            row = db.execute(f"SELECT {', '.join(_FIELDS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise UserError(f"unknown job id {job_id!r} (see `larsctl jobs`)")
            record = replace(_record(row), **changes, updated=time.time())
            db.execute(f"UPDATE jobs SET {', '.join(f'{f} = ?' for f in _FIELDS)} WHERE id = ?",
                       (*_row(record), job_id))
        return record

    def delete(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def get(self, job_id: str) -> JobRecord:
        row = self._query(f"SELECT {', '.join(_FIELDS)} FROM jobs WHERE id = ?", (job_id,))
        if not row:
            raise UserError(f"unknown job id {job_id!r} (see `larsctl jobs`)")
        return _record(row[0])

    def all(self, state: JobState | None = None, sweep: str | None = None) -> list[JobRecord]:
        where, args = [], []
        if state:
            where.append("state = ?")
            args.append(JobState(state).value)
        if sweep is not None:
            where.append("sweep = ?")
            args.append(sweep)
        sql = f"SELECT {', '.join(_FIELDS)} FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        return [_record(r) for r in self._query(sql + " ORDER BY created, id", tuple(args))]

    # -- sweeps: a grid of ordinary jobs under one id (larsctl sweep) ----------------
    # The sweep's own record is its sweep.json (larsctl.jobs.sweep_file); this is its index.
    def put_sweep(self, sweep_id: str, definition: dict, directory: str, created: float | None = None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO sweeps (id, created, definition, dir) VALUES (?, ?, ?, ?)",
                       (sweep_id, created or time.time(), json.dumps(definition, sort_keys=True), directory))

    def sweep(self, sweep_id: str) -> dict:
        return json.loads(self._sweep_row(sweep_id)[0])

    def sweep_dir(self, sweep_id: str) -> str:
        """The sweep's directory ('' for a sweep recorded before sweeps had one)."""
        return self._sweep_row(sweep_id)[1]

    def _sweep_row(self, sweep_id: str) -> tuple[str, str]:
        rows = self._query("SELECT definition, dir FROM sweeps WHERE id = ?", (sweep_id,))
        if not rows:
            raise UserError(f"unknown sweep id {sweep_id!r} (see `larsctl sweep list`)")
        return rows[0]

    def sweeps(self) -> list[tuple[str, float, dict]]:
        return [(i, c, json.loads(d)) for i, c, d in
                self._query("SELECT id, created, definition FROM sweeps ORDER BY created, id", ())]

    # -- schedulers that do not answer (a controller restarting, a login node cut off) ----------
    def scheduler_failing(self, name: str, error: str) -> float:
        """Record that scheduler ``name`` did not answer; returns since when it has not (epoch s)."""
        with self._tx() as db:
            row = db.execute("SELECT failing_since FROM scheduler_health WHERE name = ?", (name,)).fetchone()
            since = row[0] if row else time.time()
            db.execute("INSERT OR REPLACE INTO scheduler_health (name, failing_since, error) VALUES (?, ?, ?)",
                       (name, since, error))
        return since

    def scheduler_answered(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM scheduler_health WHERE name = ?", (name,))

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise Failure(f"job database {self.path}: {exc}") from None


class _Transaction:
    """``BEGIN IMMEDIATE`` ... COMMIT/ROLLBACK; the write lock is taken up front,
    so two writers queue on the busy timeout instead of deadlocking on upgrade."""

    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db, self.path = db, path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Failure(f"job database {self.path} is busy: {exc}") from None
        return self.db

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        if isinstance(exc, sqlite3.OperationalError):
            raise Failure(f"job database {self.path}: {exc}") from None
        return False


def _row(record: JobRecord) -> tuple:
    d = record.to_dict()
    d["scheduler_ids"] = json.dumps(d["scheduler_ids"])
    d["previous_ids"] = json.dumps(d["previous_ids"])
    return tuple(d[f] for f in _FIELDS)


def _record(row: tuple) -> JobRecord:
    d = dict(zip(_FIELDS, row))
    d["scheduler_ids"] = json.loads(d["scheduler_ids"])
    d["previous_ids"] = json.loads(d["previous_ids"])
    return JobRecord(**d)


def save_copy(record: JobRecord) -> None:
    """Mirror the record into its job directory (skipped quietly if the directory is gone)."""
    paths = record.paths
    if paths.root.is_dir():
        jobdir.write_json(paths.record, record.to_dict())


def record_from_job_dir(directory: Path) -> JobRecord:
    """Rebuild a record from ``job.json``, or from ``job.yaml`` if the copy is missing."""
    paths = jobdir.JobPaths(Path(directory).resolve())
    if not paths.root.is_dir():
        raise UserError(f"{directory}: no such job directory")
    if paths.record.is_file():
        try:
            data = jobdir.read_json(paths.record)
            return replace(JobRecord.from_dict(data), job_dir=str(paths.root), restarts=max(
                data.get("restarts", 0), paths.read_restarts()))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{paths.record}: not a larsctl job record: {exc}") from None
    if not paths.job_yaml.is_file():
        raise UserError(f"{directory}: not a job directory (no job.yaml or job.json)")
    from larsctl.planning.spec import JobSpec  # only here: most commands never need it

    spec = JobSpec.read(paths.job_yaml)
    created = paths.job_yaml.stat().st_mtime
    # Without job.json the scheduler ids come from the segments' own records (each batch script
    # wrote its scheduler id when it started); the scheduler then says the state.
    return JobRecord(id=paths.job_id, name=spec.name, cluster=spec.profile.name,
                     scheduler=spec.profile.scheduler, job_dir=str(paths.root), state=JobState.UNKNOWN,
                     scheduler_ids=started_ids(paths.root), restarts=paths.read_restarts(), created=created,
                     updated=created)


def started_ids(job_dir: Path) -> list[str]:
    """The scheduler ids the job's segments started under, oldest first, each once."""
    from trainer.supervisor.records import read_attempts

    ids = [(a.start or {}).get("scheduler_id") for a in read_attempts(job_dir)]
    return list(dict.fromkeys(i for i in ids if i))
