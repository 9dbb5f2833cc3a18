"""The cause of a segment from its records (trainer.supervisor.classify), table by table.

The records are written in the exact formats the writers use (trainer.supervisor.records);
every row is a situation the fault tests cause for real (tests/jobs/test_causes.py,
tests/multinode/test_faults.py), reduced to what the classification reads.
"""
from __future__ import annotations

import pytest

from trainer.supervisor.causes import Cause
from trainer.supervisor.classify import classify, error_signature, is_peer_failure
from trainer.supervisor.records import AttemptPaths, new_attempt, read_attempt, write_json


def rank(r, cause, step=10, error=None, victim=False, host="n1", t=0.0):
    return {"rank": r, "host": host, "pid": 100 + r, "cause": cause, "step": step, "detail": f"{cause} at {step}",
            "error": error, "victim": victim, "time": t}


def beat(r, step=10, host="n1", gone=None, oom=0, t=0.0, state="S"):
    hb = {"rank": r, "host": host, "pid": 100 + r, "seq": 5, "counter": 50, "step": step, "phase": "step",
          "state": state, "time": t, "period": 2.0, "idle_s": 0.5}
    if gone:
        hb.update(gone=gone, oom_kills=oom)
    return hb


def attempt(tmp_path, ranks=(), beats=(), watchdog=None, observed=None, hosts=("n1", "n2")):
    paths = new_attempt(tmp_path)
    write_json(paths.start, {"number": paths.number, "time": 0.0, "host": "n1", "hosts": list(hosts),
                             "ranks": 2})
    for r in ranks:
        write_json(paths.rank_end(r["rank"]), r)
    for hb in beats:
        write_json(paths.heartbeat(hb["rank"]), hb)
    if watchdog:
        write_json(paths.watchdog, watchdog)
    if observed:
        write_json(paths.observed, observed)
    return read_attempt(AttemptPaths(tmp_path, paths.number))


CASES = {
    "every rank completed": (dict(ranks=[rank(0, "completed", 40), rank(1, "completed", 40)]), 0, None,
                             Cause.COMPLETED, None),
    "the watchdog's verdict wins": (dict(ranks=[rank(0, "crash", victim=True)], watchdog={
        "cause": "hang", "ranks": [1], "hosts": ["n2"], "step": 9, "detail": "rank(s) 1 on n2 stopped"}),
        1, None, Cause.HANG, "n2"),
    "a diverged rank, its peer lost": (dict(ranks=[rank(0, "diverged", 7), rank(1, "crash", victim=True)]), 65, None,
                                       Cause.DIVERGED, "n1"),
    "bad input beats a victim's error": (dict(ranks=[rank(1, "bad_input"), rank(0, "crash", victim=True)]), 2, None,
                                         Cause.BAD_INPUT, "n1"),
    "oom of one rank": (dict(ranks=[rank(1, "oom", host="n2"), rank(0, "crash", victim=True)]), 1, None,
                        Cause.OOM, "n2"),
    "an exception that is not a peer's": (dict(ranks=[rank(0, "crash", error="OSError: [Errno 28] x")]), 1, None,
                                          Cause.CRASH, "n1"),
    "cancelled by TERM": (dict(ranks=[rank(0, "cancelled"), rank(1, "cancelled")]), 143, "TERM",
                          Cause.CANCELLED, None),
    "preempted by USR2": (dict(ranks=[rank(0, "preempted"), rank(1, "preempted")]), 75, "USR2",
                          Cause.PREEMPTED, None),
    "a rank killed without a word": (dict(ranks=[rank(0, "crash", victim=True)], beats=[
        beat(0), beat(1, host="n2", gone="exited", t=5.0)]), 1, None, Cause.CRASH, "n2"),
    "killed while the OOM killer ran": (dict(beats=[beat(0, gone="exited", t=9.0), beat(1, host="n2", gone="exited",
                                                                                       oom=1, t=5.0)]), 137, None,
                                        Cause.OOM, "n2"),
    "a node went silent, the others ended": (dict(beats=[beat(0, gone="exited"), beat(1, host="n2")]), 1, None,
                                             Cause.NODE_FAIL, "n2"),
    "the dead-man switch of a stuck rank": (dict(beats=[beat(0, gone="deadman", t=1.0), beat(1, gone="exited", t=2.0)]),
                                            1, None, Cause.HANG, "n1"),
    "a host of the allocation never reported": (dict(beats=[beat(0, gone="exited")]), 1, None, Cause.NODE_FAIL, "n2"),
    "exit codes alone: completed": (dict(), 0, None, Cause.COMPLETED, None),
    "exit codes alone: requeue": (dict(), 75, None, Cause.PREEMPTED, None),
    "exit codes alone: bad input": (dict(), 2, None, Cause.BAD_INPUT, None),
    "no rank started": (dict(), 143, None, Cause.CRASH, None),
    "ranks that ran but said nothing": (dict(beats=[beat(0), beat(1, host="n2")],
                                             observed={"ranks": {"0": {"silent_s": 1}, "1": {"silent_s": 1}}}),
                                        1, None, Cause.UNKNOWN, None),
}


@pytest.mark.parametrize("name", CASES)
def test_the_cause_of_a_segment(tmp_path, name):
    records, rc, signal, cause, host = CASES[name]
    ending = classify(attempt(tmp_path, **records), 2, rc=rc, signal=signal)
    assert (ending.cause, ending.host) == (cause, host), ending


def test_what_the_scheduler_says_counts_when_the_batch_script_could_not_say(tmp_path):
    a = attempt(tmp_path)
    assert classify(a, 2, scheduler=(Cause.WALLTIME, "TIMEOUT")).cause is Cause.WALLTIME
    ending = classify(a, 2, scheduler=(Cause.UNKNOWN, "exit 1:0"))
    assert ending.cause is Cause.UNKNOWN and ending.detail == "exit 1:0"


def test_a_silent_node_seen_by_the_watchdog_only_after_two_periods(tmp_path):
    """The watchdog's own clock (observed.json) decides whether a heartbeat was silent."""
    beats = [beat(0, gone="exited"), beat(1, host="n2")]
    fresh = attempt(tmp_path / "a", beats=beats, observed={"ranks": {"1": {"silent_s": 1.0}}})
    assert classify(fresh, 2, rc=1).cause is Cause.CRASH  # rank 0 ended first, without a word
    stale = attempt(tmp_path / "b", beats=beats, observed={"ranks": {"1": {"silent_s": 9.0}}})
    assert classify(stale, 2, rc=1).cause is Cause.NODE_FAIL


@pytest.mark.parametrize("text, peer", [
    ("RuntimeError: Connection closed by peer [10.0.0.2]:1234", True),
    ("HorovodInternalError: Horovod has been shut down", True),
    ("DistBackendError: [../third_party/gloo] Timed out waiting 30000ms for recv", True),
    ("OSError: [Errno 28] No space left on device", False),
    ("ValueError: shapes do not match", False),
])
def test_errors_that_only_say_a_peer_went_away(text, peer):
    assert is_peer_failure(text) is peer


def test_an_error_signature_ignores_addresses_and_later_lines():
    a = error_signature("RuntimeError", "bad tensor at 0x7f00aa12\nstack...")
    b = error_signature("RuntimeError", "bad tensor at 0x7f11bb34\nother")
    assert a == b == "RuntimeError: bad tensor at 0x?"


def test_a_probe_that_reaches_a_silent_host_makes_its_ranks_torn_down_not_dead(tmp_path):
    """Slurm tears down a whole step (side processes included) when one rank is killed: the
    silent hosts still answer, and the rank that ended first is the one that failed."""
    beats = [beat(0, gone="exited", t=5.0), beat(1, host="n2", t=6.0)]
    a = attempt(tmp_path, beats=beats, observed={"ranks": {"1": {"silent_s": 9.0}}})
    assert classify(a, 2, rc=137).cause is Cause.NODE_FAIL
    ending = classify(a, 2, rc=137, alive={"n2"})
    assert (ending.cause, ending.host) == (Cause.CRASH, "n1")


def test_the_hosts_that_outlived_the_first_silent_one():
    from trainer.supervisor.classify import outlived
    from trainer.supervisor.records import Attempt

    a = Attempt(None, heartbeats={0: beat(0, t=100.0), 1: beat(1, host="n2", t=160.0),
                                  2: beat(2, host="n3", t=101.0)})
    assert outlived(a) == {"n2"}
