"""A USR2 that reaches a rank while it is still importing torch (a batch script's
timer can fire at any moment) stops the run at its first step with a checkpoint
and the requeue code, instead of killing the rank."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time


def test_usr2_during_start_up_checkpoints_and_exits_75(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", "--engine", "ddp", "--dataset", "digits", "--image-size", "16",
         "--model", "resnet18", "--batch-size", "16", "--epochs", "1", "--max-steps", "30",
         "--base-lr", "1", "--warmup-epochs", "0", "--workers", "0", "--no-cuda", "--out-dir", str(out)],
        stderr=subprocess.PIPE, text=True)
    # Signal the moment the handler is in place (SigCgt in /proc), long before
    # torch has loaded and the run has been set up.
    deadline = time.monotonic() + 60
    while not _catches(proc.pid, signal.SIGUSR2):
        assert time.monotonic() < deadline and proc.poll() is None, "no USR2 handler installed"
        time.sleep(0.005)
    assert "torch" not in _loaded_modules_hint(proc.pid)
    proc.send_signal(signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["kind"] == "event"][-2:] == ["checkpoint", "preempted"]
    assert list((out / "checkpoints").glob("checkpoint-*.pt"))


def _catches(pid: int, sig: int) -> bool:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _loaded_modules_hint(pid: int) -> str:
    """The shared libraries mapped so far (libtorch appears once torch is imported)."""
    return "".join(line for line in open(f"/proc/{pid}/maps") if "libtorch" in line)
