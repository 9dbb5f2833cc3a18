"""Helpers for tests that run real jobs: the real `larsctl` executable, `status --json` polls.

Used by tests/jobs (through its ``jobs`` fixture) and tests/multinode.

Every job here trains the real demo recipe with the real trainer, shrunk by
submit's own override flags (tiny images, small batch, few steps) so a run
takes seconds on 2 cores.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from larsctl.results.metrics import read_records
from trainer.data.sampling import batch_digest, digest_sums, epoch_order

REPO = Path(__file__).resolve().parents[2]
LARSCTL = [sys.executable, "-m", "larsctl"]
DEMO = str(REPO / "jobs" / "demo.yaml")
# The demo, small: 2 ranks x 8 images of 16 px; effective batch 16.
SHORT = ["--recipe", DEMO, "--target-batch", "16", "--per-gpu-batch", "8",
         "--set", "image_size=16", "--set", "log_every_steps=1"]


def larsctl(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (a real process, the test's environment)."""
    r = subprocess.run([*LARSCTL, *args], capture_output=True, text=True, timeout=timeout,
                       cwd=REPO, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"larsctl {' '.join(args)} exited {r.returncode}\n"
                             f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def status(job_id: str) -> dict:
    return json.loads(larsctl("status", job_id, "--json").stdout)[0]


def wait_for(job_id: str, predicate, timeout: float = 240, what: str = "condition") -> dict:
    """Poll `larsctl status --json` until ``predicate(row)``; returns that row."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        row = status(job_id)
        seen.append(row["state"])
        if predicate(row):
            row["seen_states"] = seen
            return row
        if row["state"] in ("FAILED", "CANCELLED", "TIMEOUT") and not predicate(row):
            break
        time.sleep(1)
    logs = larsctl("logs", job_id, check=False).stdout[-4000:]
    raise AssertionError(f"{job_id}: no {what} (states seen {seen}); last row {row}\nlogs:\n{logs}")


def step(row: dict) -> int:
    return row["progress"]["step"] or 0


def events(job_dir: str, kind: str) -> list[dict]:
    out = []
    for line in Path(job_dir, "metrics.jsonl").read_text().splitlines():
        obj = json.loads(line)
        if obj.get("kind") == "event" and obj.get("event") == kind:
            out.append(obj)
    return out


def write_profile(config_dir: Path, name: str, **fields) -> None:
    """A user profile in $LARSCTL_CONFIG_DIR/clusters, starting from the shipped local one."""
    import yaml

    data = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    data.update(name=name, **fields)
    (config_dir / "clusters").mkdir(exist_ok=True)
    (config_dir / "clusters" / f"{name}.yaml").write_text(yaml.safe_dump(data))


def pid_of(job_dir: str, segment: int = 0) -> int:
    return int(Path(job_dir, "state", f"segment-{segment}.pid").read_text().split()[0])


# -- evidence of the same run: the samples of every step ------------------------------------
def digests(job_dir: str) -> dict[int, str]:
    return {r["step"]: r["batch_digest"] for r in read_records(Path(job_dir, "metrics.jsonl"))
            if r.get("kind") == "train"}


def expected_digests(steps: int, batch: int, samples: int, seed: int = 42) -> dict[int, str]:
    """What step s covers: the global positions [sB, (s+1)B) of its epoch's order."""
    per_epoch = samples // batch
    out = {}
    for step in range(1, steps + 1):
        epoch, k = divmod(step - 1, per_epoch)
        out[step] = batch_digest(digest_sums(epoch, epoch_order(samples, seed, epoch)[k * batch:(k + 1) * batch]))
    return out


def train_samples(larsctl_dirs, image_size: int) -> int:
    """Training images of the digits set at ``image_size`` (as the trainer materialised it)."""
    return sum(1 for _ in Path(larsctl_dirs["data"]).glob(f"digits-{image_size}/imagefolder/train/*/*.png"))
