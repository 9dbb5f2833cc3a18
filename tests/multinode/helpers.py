"""Helpers of the multi-node job tests (test modules are not packages: import them from here)."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.jobs.helpers import DEMO, larsctl

NODES = ("n1", "n2", "n3")
# One rank per node, 8 images of 16 px each: effective batch 24.
SMALL = ["--recipe", DEMO, "--target-batch", "24", "--per-gpu-batch", "8", "--gpus", "3",
         "--set", "image_size=16", "--set", "log_every_steps=1"]


def rank_lines(job_dir: str) -> dict[int, str]:
    """rank -> that rank's own log (logs/ranks/rank.R.log)."""
    return {int(p.name.split(".")[1]): p.read_text() for p in Path(job_dir, "logs", "ranks").glob("rank.*.log")}


def assert_trained_across_nodes(job_id: str, row: dict) -> dict[int, str]:
    """Distinct hosts, equal final weights, loss fell, outputs in the shared job dir; rank -> host."""
    logs = rank_lines(row["job_dir"])
    assert sorted(logs) == [0, 1, 2], sorted(logs)
    hosts = {}
    for rank, text in logs.items():
        hosts[rank] = re.findall(rf"trainer: rank {rank} of 3 on (\S+),", text)[-1]
    assert sorted(hosts.values()) == list(NODES), hosts
    digests = {rank: re.findall(r"final parameters sha256 (\w+)", text)[-1] for rank, text in logs.items()}
    assert len(set(digests.values())) == 1, digests  # the allreduce kept every rank's weights equal
    losses = [json.loads(line)["loss"] for line in Path(row["job_dir"], "metrics.jsonl").read_text().splitlines()
              if '"kind": "train"' in line]
    assert min(losses[-3:]) < max(losses[:3]), losses
    assert list(Path(row["job_dir"], "checkpoints").glob("checkpoint-*.pt"))
    on_n2 = next(rank for rank, host in hosts.items() if host == "n2")
    shown = larsctl("logs", job_id, "--rank", str(on_n2)).stdout
    assert f"trainer: rank {on_n2} of 3 on n2," in shown
    return hosts


def trainers_on(virtual_cluster, nodes=NODES) -> dict[str, str]:
    """node -> the command lines of trainer processes there (ranks, heartbeats, watchdogs)."""
    out = {}
    for node in nodes:
        # "[-]m": a pattern that starts with "-" is an option to pgrep, which then checks nothing.
        r = virtual_cluster.run(node, "pgrep", "-af", "[-]m trainer", check=False)
        assert r.returncode in (0, 1), f"pgrep on {node} failed: {r.stderr}"
        out[node] = r.stdout.strip()
    return out


def wait_no_trainers(virtual_cluster, nodes=NODES, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        left = trainers_on(virtual_cluster, nodes)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(1)
