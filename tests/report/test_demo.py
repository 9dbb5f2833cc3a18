"""Issue 7, "What must show": two short demo jobs with different effective batches,
submitted to the local profile and trained by the real trainer (2 Gloo workers
each), then reported.  The PNG must exist, be a valid image of the size asked
for, and compare's numbers must be the ones in the jobs' own metrics.jsonl."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
JOBS = {"small": (32, 16), "large": (64, 32)}  # name: (effective batch, per-worker batch)


def larsctl(*args, timeout=60) -> str:
    result = subprocess.run([sys.executable, "-m", "larsctl", *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"larsctl {' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"
    return result.stdout


def metrics(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_demo_jobs_report_and_compare(tmp_path):
    ids = {}
    for name, (batch, per_worker) in JOBS.items():  # both run at once on the local profile
        ids[name] = larsctl("submit", "--cluster", "local", "--recipe", "jobs/demo.yaml", "--name", name,
                            "--target-batch", batch, "--per-gpu-batch", per_worker, "--max-steps", 3,
                            "--set", "image_size=16").strip()
    larsctl("status", "--watch", *ids.values(), timeout=240)
    status = {job["id"]: job for job in json.loads(larsctl("status", "--json", *ids.values()))}
    assert {job["state"] for job in status.values()} == {"COMPLETED"}, status
    job_dirs = {name: Path(status[job_id]["job_dir"]) for name, job_id in ids.items()}

    png = tmp_path / "report.png"
    larsctl("report", *ids.values(), "--out", png, "--size", "1200x800")
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert (image.format, image.size) == ("PNG", (1200, 800))

    rows = json.loads(larsctl("compare", "--json", *ids.values()))
    assert [row["name"] for row in rows] == [ids["small"], ids["large"]]  # sorted by effective batch
    table = larsctl("compare", *ids.values()).splitlines()
    for row, line in zip(rows, table[2:]):
        name = next(n for n, job_id in ids.items() if job_id == row["name"])
        records = metrics(job_dirs[name])
        train = [r for r in records if r["kind"] == "train"]
        val = [r for r in records if r["kind"] == "val"]
        plan = yaml.safe_load((job_dirs[name] / "job.yaml").read_text())["plan"]
        assert row["effective_batch"] == train[-1]["effective_batch"] == plan["effective_batch"] \
            == JOBS[name][0]
        assert row["per_gpu_batch"] == plan["per_gpu_batch"] == JOBS[name][1]
        assert (row["base_lr"], row["warmup_epochs"], row["epsilon"]) == (
            plan["base_lr"], plan["warmup_epochs"], plan["epsilon"])
        assert row["last_val_top1"] == val[-1]["accuracy"]
        assert row["best_val_top1"] == max(r["accuracy"] for r in val)
        assert row["last_val_top5"] == val[-1]["top5"]
        assert row["steps"] == train[-1]["step"] == 3
        assert row["epochs"] == max(r["epoch"] for r in train + val)
        assert row["gpus"] == plan["gpus"] and row["gpu_hours"] == pytest.approx(
            plan["gpus"] * row["wall_time_s"] / 3600)
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[0] == row["name"] and cells[1] == str(JOBS[name][0])
        assert cells[-1] == f"{100 * val[-1]['accuracy']:.2f}%"

    html = tmp_path / "report.html"
    larsctl("report", *ids.values(), "--out", html)
    page = html.read_text()
    assert "data:image/png;base64," in page
    for row in rows:
        assert f"<td>{row['name']}</td>" in page and f"<td>{100 * row['last_val_top1']:.2f}%</td>" in page
