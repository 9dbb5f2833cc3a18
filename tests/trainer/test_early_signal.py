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
    time.sleep(0.3)  # python is up, torch is not imported yet
    proc.send_signal(signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["kind"] == "event"][-2:] == ["checkpoint", "preempted"]
    assert list((out / "checkpoints").glob("checkpoint-*.pt"))
