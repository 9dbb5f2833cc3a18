"""The pure parts (progress from metrics.jsonl, one state per job) and the registry under load."""
from __future__ import annotations

import json
import multiprocessing
import sqlite3

import pytest

from larsctl.jobs.registry import Registry
from larsctl.facts.states import JobState as S
from larsctl.facts.states import aggregate
from larsctl.results import metrics


def _train(step, t, total=100):
    return {"kind": "train", "time": t, "epoch": step / 10, "step": step, "total_steps": total,
            "loss": 1.0 / step, "images_per_sec": 50.0}


def test_progress_from_metrics_lines_skips_a_torn_last_line(tmp_path):
    lines = [json.dumps(r) for r in (
        {"kind": "event", "event": "start", "step": 0, "epoch": 0.0, "time": 0},
        _train(1, 10.0), _train(2, 12.0),
        {"kind": "val", "time": 13.0, "epoch": 0.2, "step": 2, "accuracy": 0.5, "top5": 0.9, "loss": 1.2},
        _train(3, 14.0))] + ['{"kind": "train", "ste']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    p = metrics.read_progress(tmp_path / "metrics.jsonl")
    assert (p.step, p.total_steps, p.epoch, p.val_accuracy, p.val_top5) == (3, 100, 0.3, 0.5, 0.9)
    assert p.eta_seconds == pytest.approx(97 * 2.0)  # 2 s per step over the recent records
    assert p.fraction == pytest.approx(0.03)
    assert not p.done


def test_eta_uses_only_the_records_after_a_restart():
    records = [_train(1, 0.0), _train(2, 100.0), _train(3, 200.0),       # slow first run
               {"kind": "event", "event": "resume", "step": 2, "epoch": 0.2, "time": 500.0},
               _train(3, 501.0), _train(4, 502.0)]                       # 1 s per step after it
    p = metrics.summarise(records)
    assert p.resumes == 1
    assert p.eta_seconds == pytest.approx(96.0)


def test_done_event_means_no_time_left():
    p = metrics.summarise([_train(10, 1.0, total=10),
                            {"kind": "event", "event": "done", "step": 10, "epoch": 1.0, "time": 2.0}])
    assert p.done and p.eta_seconds == 0.0 and p.fraction == 1.0


@pytest.mark.parametrize("segments, expected", [
    ([S.RUNNING], S.RUNNING),
    ([S.TIMEOUT, S.PENDING], S.PENDING),        # chain: segment 2 waits
    ([S.TIMEOUT, S.COMPLETED], S.COMPLETED),    # chain: finished in segment 2
    ([S.CANCELLED, S.COMPLETED], S.COMPLETED),  # resumed after a cancel
    ([S.COMPLETED, S.CANCELLED], S.CANCELLED),
    ([S.UNKNOWN, S.FAILED], S.FAILED),          # an old segment the scheduler forgot
    ([S.UNKNOWN], S.UNKNOWN),
    ([S.PREEMPTED], S.PREEMPTED),               # PreemptMode=CANCEL: ended, not active
    ([S.PREEMPTED, S.RUNNING], S.RUNNING),      # resumed after a preemption
    ([S.COMPLETED, S.PENDING], S.PENDING),      # PBS: resubmitted itself, the new id waits
])
def test_one_state_for_a_job_of_several_segments(segments, expected):
    assert aggregate(segments) is expected


def _claim_many(n: int, out) -> None:
    reg = Registry()
    out.put([reg.claim_id("same", cluster="local", scheduler="local", job_dir="/x").id for _ in range(n)])


def test_concurrent_processes_claim_distinct_ids(larsctl_dirs):
    """Eight processes (forked before any connection is open) claiming ids for the same name at the same second: all distinct, all stored."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_many, args=(25, out)) for _ in range(8)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in out.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(ids) == len(set(ids)) == 200
    assert {r.id for r in Registry().all()} == set(ids)
    mode = sqlite3.connect(larsctl_dirs["home"] / "jobs.sqlite").execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)
