"""The watchdog's verdicts from heartbeat views (trainer.supervisor.watchdog.Observer), with the
times it would see them, and the heartbeat side process for real: a stopped rank, a rank that
ends, the dead-man switch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


from trainer.supervisor.causes import Cause, FaultSettings
from trainer.supervisor.records import read_json
from trainer.supervisor.watchdog import Observer

SETTINGS = FaultSettings(bound_s=20, startup_s=60)


def hb(rank, seq, counter, step, phase="step", host="n1", state="S", gone=None):
    return {"rank": rank, "seq": seq, "counter": counter, "step": step, "phase": phase, "host": host, "state": state,
            "gone": gone}


def observe(frames, ranks=2, settings=SETTINGS):
    """frames: [(time, {rank: heartbeat})]; the last verdict."""
    obs = Observer(ranks, settings, started=0.0)
    verdict = None
    for now, beats in frames:
        obs.update(beats, set(), now)
        verdict = obs.judge(now)
    return verdict


def test_progress_is_no_verdict():
    frames = [(t, {0: hb(0, t, t, t), 1: hb(1, t, t, t, host="n2")}) for t in range(0, 40, 2)]
    assert observe(frames) is None


def test_a_silent_node_is_node_fail_naming_it():
    frames = [(t, {0: hb(0, t, t, t), 1: hb(1, min(t, 6), min(t, 6), min(t, 6), host="n2")}) for t in range(0, 30, 2)]
    v = observe(frames)
    assert v.cause is Cause.NODE_FAIL and v.hosts == ("n2",) and v.ranks == (1,)


def first_verdict(frames, ranks):
    """frames: [(time, {rank: heartbeat}, ended ranks)]; (time, verdict) of the first verdict."""
    obs = Observer(ranks, SETTINGS, started=0.0)
    for now, beats, ended in frames:
        obs.update(beats, ended, now)
        if (verdict := obs.judge(now)) is not None:
            return now, verdict
    return None, None


def test_a_silent_node_whose_peers_failed_is_judged_after_two_heartbeat_periods():
    """n2 dies at t=6: the ranks on n1 and n3 lose their peer and end at t=7.  Half the bound is
    10 s; two periods (2 s each) and a second of silence are enough once a peer ended."""
    def frames(peers_end):
        out = []
        for t in range(0, 30):
            beats = {0: hb(0, t, t, t), 1: {**hb(1, min(t, 6), min(t, 6), min(t, 6), host="n2"), "period": 2.0},
                     2: hb(2, t, t, t, host="n3")}
            out.append((t, beats, {0, 2} if peers_end and t >= 7 else set()))
        return out
    at, v = first_verdict(frames(peers_end=True), 3)
    assert v.cause is Cause.NODE_FAIL and v.hosts == ("n2",) and at == 12, (at, v)
    at, v = first_verdict(frames(peers_end=False), 3)  # the others go on: half the bound
    assert v.cause is Cause.NODE_FAIL and v.hosts == ("n2",) and at == 17, (at, v)


def test_a_stopped_rank_is_the_one_named_even_when_another_rank_stalled_first():
    frames = [(t, {0: hb(0, t, min(t, 8), 8), 1: hb(1, t, min(t, 6), 8, host="n2", state="T" if t > 8 else "S")})
              for t in range(0, 30, 2)]
    v = observe(frames)
    assert v.cause is Cause.HANG and v.ranks == (1,) and "stopped (state T)" in v.detail


def test_a_rank_waiting_for_data_is_the_one_named():
    frames = [(t, {0: hb(0, t, min(t, 8), 8), 1: hb(1, t, min(t, 8), 8, phase="data")}) for t in range(0, 30, 2)]
    v = observe(frames)
    assert v.ranks == (1,) and "waiting for data" in v.detail


def test_start_up_gets_its_own_bound():
    frames = [(t, {0: hb(0, t, 1, 0, phase="startup"), 1: hb(1, t, 1, 0, phase="startup")}) for t in range(0, 58, 2)]
    assert observe(frames) is None
    frames += [(t, {0: hb(0, t, 1, 0, phase="startup"), 1: hb(1, t, 1, 0, phase="startup")}) for t in (62, 64)]
    assert observe(frames).cause is Cause.HANG


def test_a_rank_that_never_starts_is_a_hang_after_the_start_up_bound():
    v = observe([(t, {0: hb(0, t, t, t)}) for t in range(0, 64, 2)])
    assert v.cause is Cause.HANG and v.ranks == (1,) and "did not start" in v.detail


def test_the_bound_grows_with_slow_steps():
    """Steps of 3 s: 10 median steps = 30 s > 20 s, so the verdict comes after 15 s without
    progress, not after 10 s."""
    frames = [(t, {0: hb(0, t, t // 3, t // 3), 1: hb(1, t, t // 3, t // 3)}) for t in range(0, 58)]  # step 19 at 57
    assert observe(frames + [(t, {0: hb(0, t, 19, 19), 1: hb(1, t, 19, 19)}) for t in range(58, 71)]) is None
    late = observe(frames + [(t, {0: hb(0, t, 19, 19), 1: hb(1, t, 19, 19)}) for t in range(58, 74)])
    assert late.cause is Cause.HANG and "for 15s" in late.detail


CHILD = """
import sys, time
from trainer.supervisor.heartbeat import Heartbeat
hb = Heartbeat(__import__("pathlib").Path(sys.argv[1]), 0, period_s=0.5, deadman_s=float(sys.argv[2]),
               startup_deadman_s=60)
step = 0
print("ready", flush=True)
while step < int(sys.argv[3]):
    step += 1
    hb.set("step", step)
    time.sleep(0.05)
time.sleep(600)
"""


def start_rank(tmp_path, deadman=60.0, steps=10**9):
    out = tmp_path / "heartbeat.0.json"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(deadman), str(steps)],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    return proc, out


def wait_record(out, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = read_json(out)
        if record and predicate(record):
            return record
        time.sleep(0.1)
    raise AssertionError(f"no such heartbeat record in {out}: last {read_json(out)}")


def test_the_side_process_reports_a_stopped_rank_and_the_end_of_a_killed_one(tmp_path):
    proc, out = start_rank(tmp_path)
    try:
        first = wait_record(out, lambda r: r["step"] > 0)
        assert first["pid"] == proc.pid and first["state"] in ("R", "S")
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = wait_record(out, lambda r: r["state"] == "T")
        later = wait_record(out, lambda r: r["seq"] > stopped["seq"] + 1)
        assert later["counter"] == stopped["counter"]  # the file goes on, the counter does not
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        last = wait_record(out, lambda r: r.get("gone"))
        assert last["gone"] == "exited" and last["oom_kills"] >= 0
    finally:
        proc.kill()
        proc.wait()


def test_the_dead_man_switch_kills_a_rank_without_progress(tmp_path):
    proc, out = start_rank(tmp_path, deadman=2.0, steps=5)
    try:
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert wait_record(out, lambda r: r.get("gone"))["gone"] == "deadman"
    finally:
        proc.kill()
        proc.wait()
