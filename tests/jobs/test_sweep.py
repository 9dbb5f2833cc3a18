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


def test_a_tiny_sweep_runs_as_ordinary_jobs_and_reports_the_fit(jobs, larsctl_dirs, tmp_path):
    args = ["sweep", "--cluster", "local", "--recipe", str(REPO / "jobs" / "digits-sweep.yaml"),
            "--batches", "32,64,128", "--optimizers", "sgd", "--lr-rule", "linear", "--seeds", "1",
            "--target", "val/accuracy>=0.6", "--eval-examples", "64", "--max-steps", "400"]
    dry = jobs.larsctl(*args, "--dry-run").stdout.splitlines()
    assert [line.split()[0] for line in dry if line.startswith("b")] == [
        "b32-sgd-lr0.0125-s1", "b64-sgd-lr0.025-s1", "b128-sgd-lr0.05-s1"]
    assert any(line.startswith("3 jobs, at most 1 at once: about ") and "GPU-hours" in line for line in dry), dry
    assert not (larsctl_dirs["home"] / "runs").exists()  # a dry run writes nothing
    sweep_id = jobs.larsctl(*args).stdout.strip()
    sweep = json.loads((larsctl_dirs["home"] / "runs" / "sweeps" / sweep_id / "sweep.json").read_text())
    assert sweep["state"] == "submitted" and len(sweep["points"]) == 3 and all(p["job"] for p in sweep["points"])
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



def test_a_batch_whose_best_lr_is_at_an_edge_grows_its_grid_beyond_it(jobs, larsctl_dirs):
    args = ["sweep", "--cluster", "local", "--recipe", str(REPO / "jobs" / "digits-sweep.yaml"),
            "--batches", "64", "--optimizers", "sgd", "--lr-rule", "linear", "--lr-factors", "1,4", "--seeds", "1",
            "--target", "val/accuracy>=0.6", "--eval-examples", "64", "--max-steps", "300", "--lr-extend", "1"]
    sweep_id = jobs.larsctl(*args).stdout.strip()
    first = _wait_all(jobs, sweep_id, 2)
    (batch,) = first["optimizers"][0]["batches"]
    lrs = sorted(c["lr"] for c in batch["cells"])
    assert batch["edge"] in ("low", "high")  # two LRs: the best is at one edge or neither reached
    text = jobs.larsctl("sweep", "report", sweep_id).stdout
    assert f"({batch['edge']} edge)" in text and "`larsctl sweep resume SWEEP` grows their grids" in text

    # --wait: grow, wait for the new point, look again; --lr-extend 1 caps it at one step beyond.
    r = jobs.larsctl("sweep", "resume", sweep_id, "--wait", "--poll", "2", timeout=600)
    assert r.stdout.strip() == sweep_id
    assert r.stderr.count(f"{sweep_id}: added 1 point beyond the edge") == 1, r.stderr
    beyond = lrs[0] / 4 if batch["edge"] == "low" else lrs[-1] * 4  # the grid's own factor there
    points = json.loads((larsctl_dirs["home"] / "runs" / "sweeps" / sweep_id / "sweep.json").read_text())["points"]
    assert sorted(p["lr"] for p in points) == pytest.approx(sorted([*lrs, beyond]))
    second = _wait_all(jobs, sweep_id, 3)  # --wait returned once they had ended
    (batch,) = second["optimizers"][0]["batches"]
    assert sorted(c["lr"] for c in batch["cells"]) == pytest.approx(sorted([*lrs, beyond]))
    assert "added" not in jobs.larsctl("sweep", "resume", sweep_id).stderr


def _wait_all(jobs, sweep_id: str, count: int) -> dict:
    rows = json.loads(jobs.larsctl("jobs", "--sweep", sweep_id, "--json").stdout)
    assert len(rows) == count
    for row in rows:
        jobs.wait_for(row["id"], lambda r: r["state"] == "COMPLETED", timeout=300, what="COMPLETED")
    return json.loads(jobs.larsctl("sweep", "report", sweep_id, "--json").stdout)
