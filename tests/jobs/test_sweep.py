"""larsctl sweep end to end on the local profile: a tiny grid of real jobs, then its report.

Three batch sizes of the digits study recipe (jobs/digits-sweep.yaml), SGD at the linear
rule's LR, to a modest accuracy: every point is an ordinary job that evaluates every 64
examples and stops at the target; the report measures steps-to-target per batch, fits
S = S_min (1 + B_crit / B) and sets the jobs' own noise-scale prediction beside it.
The full study (9 batches, LARS and SGD, an LR grid, 3 seeds) is bench/bench_noise_study.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_sweep_runs_as_ordinary_jobs_and_reports_the_fit(jobs, tmp_path):
    args = ["sweep", "--cluster", "local", "--recipe", str(REPO / "jobs" / "digits-sweep.yaml"),
            "--batches", "32,64,128", "--optimizers", "sgd", "--lr-rule", "linear", "--seeds", "1",
            "--target", "val/accuracy>=0.6", "--eval-examples", "64", "--max-steps", "400"]
    dry = jobs.larsctl(*args, "--dry-run").stdout.splitlines()
    assert [line.split(":")[0] for line in dry] == ["b32-sgd-lr0.0125-s1", "b64-sgd-lr0.025-s1",
                                                    "b128-sgd-lr0.05-s1"]
    sweep_id = jobs.larsctl(*args).stdout.strip()
    listed = json.loads(jobs.larsctl("sweep", "list", "--json").stdout)
    assert [s["id"] for s in listed] == [sweep_id] and listed[0]["jobs"] == 3
    rows = json.loads(jobs.larsctl("jobs", "--sweep", sweep_id, "--json").stdout)
    assert len(rows) == 3 and {r["sweep"] for r in rows} == {sweep_id}
    for row in rows:  # one lane on 2 cores: each point waits for the one before
        jobs.wait_for(row["id"], lambda r: r["state"] == "COMPLETED", timeout=300, what="COMPLETED")

    out = tmp_path / "sweep.png"
    report = json.loads(jobs.larsctl("sweep", "report", sweep_id, "--json", "--out", str(out)).stdout)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (sgd,) = report["optimizers"]
    steps = {b["effective_batch"]: b["median_steps"] for b in sgd["batches"]}
    assert set(steps) == {32, 64, 128} and all(s is not None and s > 0 for s in steps.values()), steps
    assert steps[32] >= steps[128]  # a larger batch needs no more steps
    assert sgd["fit"] is not None and sgd["fit"]["b_crit"] > 0
    assert sgd["predicted_b_noise"] is not None  # 2 workers: every job measured the noise scale
    text = jobs.larsctl("sweep", "report", sweep_id).stdout
    assert "McCandlish" in text and "Zhang" in text

    noise = json.loads(jobs.larsctl("noise", rows[0]["id"], "--json").stdout)
    assert noise["summary"]["recommended"] > 0
    shown = jobs.larsctl("noise", rows[0]["id"], "--cluster", "local").stdout
    assert "recommended" in shown.lower() and "Plan for the recommended batch" in shown
