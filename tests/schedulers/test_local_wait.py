"""A queued local job waits for the one before it without starting processes.

A sweep on the local profile queues every job at once, each waiting on the one before it;
with 160 queued jobs a wait loop that starts `sleep` and `cat` every second made ~300
processes a second and took CPU from the job that was running.  Here the real wait lines
of the local job script run under bash against a real predecessor process.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from larsctl.schedulers.local import _BEFORE_LAUNCH, proc_starttime


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_a_queued_job_starts_no_process_while_it_waits_and_goes_on_when_the_one_before_ends(tmp_path):
    script = tmp_path / "wait.sh"
    script.write_text("larsctl_status=status\nlarsctl_cancel=cancel\nlarsctl_started=started\n"
                      + _BEFORE_LAUNCH + "echo reached\n")
    before = subprocess.Popen(["sleep", "60"])
    try:
        env = {"PATH": "/usr/bin:/bin", "LARSCTL_AFTER_PID": str(before.pid),
               "LARSCTL_AFTER_START": proc_starttime(before.pid)}
        waiting = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)  # past its start
        seen = []
        for _ in range(50):  # 2.5 s of waiting: 2 or 3 rounds of the loop
            seen += _children(waiting.pid)
            time.sleep(0.05)
        assert waiting.poll() is None and not (tmp_path / "started").exists()
        assert seen == [], f"the waiting script started processes: {sorted(set(seen))}"
    finally:
        before.kill()
        before.wait()
    out, _ = waiting.communicate(timeout=10)
    assert waiting.returncode == 0 and out == "reached\n"
    assert (tmp_path / "started").exists() and (tmp_path / "status").read_text() == "COMPLETED 0\n"
