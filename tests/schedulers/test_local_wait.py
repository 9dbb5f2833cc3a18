"""A queued local job waits for the one before it without starting processes.

A sweep on the local profile queues every job at once, each waiting on the one before it;
with 160 queued jobs a wait loop that starts `sleep` and `cat` every second made ~300
processes a second and took CPU from the job that was running.  Here the real wait lines
of the local job script run under bash against a real predecessor process.

How "no process per round" is measured without depending on timing: the waiting script
runs in a PID namespace of its own, where the kernel hands out PIDs one after the other
(1, 2, 3, ...).  The script's last act is a subshell that prints its own PID: that number
is one more than the count of every process ever started in the namespace, however soon
or late bash reaped them.  A predecessor that lives 0.2 s (one round of the loop) and one
that lives 3.5 s (four rounds) must give the same number.  Sampling the children of the
waiting shell instead (the earlier version of this test) counted the zombie of the
one-time ``<(:)`` whenever bash had not reaped it yet, and failed 7 runs of 8 on a fresh
machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from larsctl.schedulers.local import _BEFORE_LAUNCH

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and util-linux unshare (a PID namespace of its own)")

# PID 1 of the namespace: start the predecessor, queue the waiting script behind it, end the
# predecessor after HOLD seconds.  Its own processes (two sleeps and the script) are the same
# for every HOLD; only the rounds of the wait loop differ.
HARNESS = r"""
sleep 600 & before=$!
read -r stat < "/proc/$before/stat"
read -r -a fields <<< "${stat##*) }"
LARSCTL_AFTER_PID=$before LARSCTL_AFTER_START=${fields[19]} bash "$1" & waiting=$!
sleep "$2"
kill "$before"
wait "$waiting"
"""


def wait_behind(tmp_path, hold: float, before_launch: str = _BEFORE_LAUNCH) -> tuple[str, int]:
    """Run the wait lines behind a predecessor that lives ``hold`` s: (output, harness exit code).

    The output ends with ``next pid N``: every process started in the namespace so far, plus one.
    """
    work = tmp_path / f"hold-{hold}"
    work.mkdir()
    script = work / "wait.sh"
    script.write_text("larsctl_status=status\nlarsctl_cancel=cancel\nlarsctl_started=started\n"
                      + before_launch + 'echo reached\n( echo "next pid $BASHPID" )\n')
    harness = work / "harness.sh"
    harness.write_text(HARNESS)
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "bash", str(harness), str(script),
                        str(hold)], cwd=work, env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                       text=True, timeout=60)
    assert (work / "started").exists() and (work / "status").read_text() == "COMPLETED 0\n", r.stderr
    return r.stdout, r.returncode


def next_pid(out: str) -> int:
    lines = out.splitlines()
    assert lines[:-1] == ["reached"] and lines[-1].startswith("next pid "), out
    return int(lines[-1].split()[-1])


def test_a_queued_job_starts_no_process_per_round_of_its_wait_and_goes_on_when_the_one_before_ends(tmp_path):
    short, rc_short = wait_behind(tmp_path, 0.2)
    long, rc_long = wait_behind(tmp_path, 3.5)
    assert rc_short == rc_long == 0
    assert next_pid(long) == next_pid(short), (
        f"waiting 3.5 s started {next_pid(long) - next_pid(short)} more processes than waiting 0.2 s")


def test_the_measure_sees_a_wait_loop_that_starts_processes(tmp_path):
    """The check above fails for the loop it was written against (``sleep 1`` every round)."""
    forking = _BEFORE_LAUNCH.replace('read -r -t 1 -u "$larsctl_tick" || true', "sleep 1")
    assert forking != _BEFORE_LAUNCH
    short, _ = wait_behind(tmp_path, 0.2, forking)
    long, _ = wait_behind(tmp_path, 3.5, forking)
    assert next_pid(long) - next_pid(short) >= 3
