"""Measured throughput: finished jobs' images/s replace the table's figure, and say so.

Pure parts (``job_rate``, ``pool``, the estimate with a ``Measured``) are table-driven;
the I/O layer is checked end to end on job directories in the test's own larsctl home.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.jobs.registry import JobRecord, Registry
from larsctl.facts.states import JobState
from larsctl.planning.measured import MIN_RECORDS, NEWEST, Measured, Run, job_rate, pool
from larsctl.planning.planner import Cluster, PlanRequest, make_plan
from larsctl.planning.spec import resolve_job
from tests.planner.conftest import REPO

DEMO_RECIPE = REPO / "jobs/demo.yaml"
LOCAL = Cluster("local", 1, 2, "cpu", 10.0, 86400, 60)
DEMO = {"model": "resnet18", "image_size": 32, "train_images": 1437, "val_images": 360,
        "per_gpu_batch": 64, "epochs": 8}


def train(ips: float, step: int = 1) -> dict:
    return {"kind": "train", "step": step, "images_per_sec": ips, "effective_batch": 256}


# train records' images/s (plus other records) -> the job's figure (median), None if too few
RATES = {
    "median": ([train(180), train(190), train(185)], 185.0),
    "epoch_start_windows_do_not_pull": ([train(60), train(180), train(185), train(190), train(50)], 180.0),
    "even_count": ([train(100), train(200), train(300), train(400)], 250.0),
    "val_and_events_ignored": ([train(180), {"kind": "val", "step": 1}, train(190),
                                {"kind": "event", "event": "done"}, train(200)], 190.0),
    "too_few": ([train(180)] * (MIN_RECORDS - 1), None),
    "no_rate_field": ([{"kind": "train", "step": 1}] * 5, None),
}


@pytest.mark.parametrize("case", sorted(RATES))
def test_job_rate_is_the_median_of_its_train_records(case):
    records, expected = RATES[case]
    assert job_rate(records) == expected


def run(job: str, ips: float, ranks: int = 2, profile: str = "local", model: str = "resnet18",
        size: int = 32, precision: str = "fp32") -> Run:
    return Run(job, profile, model, size, precision, ranks, ips)


MATCHING = dict(profile="local", model="resnet18", image_size=32, precision="fp32")
# runs -> (images/s per worker, jobs) pooled for local/resnet18/32 px/fp32, or None
POOLS = {
    "none": ([], None),
    "one": ([run("a", 185)], (92.5, 1)),
    "median_over_jobs_per_worker": ([run("a", 185), run("b", 100, ranks=1), run("c", 400)],
                                    (100.0, 3)),
    "other_profile": ([run("a", 185, profile="slurm-v100")], None),
    "other_model": ([run("a", 185, model="resnet50")], None),
    "other_size": ([run("a", 185, size=64)], None),
    "other_precision": ([run("a", 185, precision="bf16")], None),
    "only_matching_count": ([run("a", 185), run("b", 999, size=64), run("c", 185)], (92.5, 2)),
    "newest_only": ([run(str(i), 1000) for i in range(5)] + [run(f"n{i}", 200) for i in range(NEWEST)],
                    (100.0, NEWEST)),
}


@pytest.mark.parametrize("case", sorted(POOLS))
def test_pool_matches_profile_model_size_and_precision(case):
    runs, expected = POOLS[case]
    got = pool(runs, **MATCHING)
    if expected is None:
        assert got is None
    else:
        assert (got.images_per_second, got.jobs) == expected
        assert (got.profile, got.model, got.image_size, got.precision) == ("local", "resnet18", 32, "fp32")


def test_measured_says_where_it_comes_from():
    measured = Measured(92.5, 3, "local", "resnet18", 32, "fp32")
    assert measured.describe("worker") == \
        "measured: 92.5 img/s per worker from 3 jobs on profile local (resnet18, 32 px, fp32)"
    assert Measured(1200.0, 1, "c", "resnet50", 224, "fp16").describe("GPU") == \
        "measured: 1,200 img/s per GPU from 1 job on profile c (resnet50, 224 px, fp16)"


def test_the_estimate_uses_the_measured_figure():
    table = make_plan(LOCAL, PlanRequest(256, **DEMO)).estimate
    measured = Measured(92.5, 3, "local", "resnet18", 32, "fp32")
    est = make_plan(LOCAL, PlanRequest(256, measured=measured, **DEMO)).estimate
    assert est.compute_seconds == pytest.approx(2 * 64 / 92.5)
    assert est.throughput == measured.describe("worker")
    assert est.assumptions[0] == "throughput " + measured.describe("worker")
    assert table.throughput.startswith("table: 443 img/s per worker")
    assert est.train_seconds > 4 * table.train_seconds


# -- the I/O layer: job directories found through the registry ----------------------------
def _finished_job(home: Path, job_id: str, rates: list[float], state=JobState.COMPLETED,
                  cluster: str = "local", **flags) -> None:
    job_dir = home / "runs" / job_id
    job_dir.mkdir(parents=True)
    spec = resolve_job(cluster, DEMO_RECIPE, trainer=flags.pop("trainer", None), **flags)
    (job_dir / "job.yaml").write_text(spec.to_yaml())
    lines = [{"kind": "event", "event": "start", "step": 0}]
    lines += [train(ips, step) for step, ips in enumerate(rates, 1)]
    (job_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    registry = Registry()
    registry.add(JobRecord(job_id, "demo", cluster, "local", str(job_dir), state))
    registry.close()


def _estimate(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["plan", "--cluster", "local", "--recipe", str(DEMO_RECIPE),
                                      "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["plan"]["estimate"]


def test_plan_uses_finished_jobs_on_the_profile(larsctl_dirs):
    home = larsctl_dirs["home"]
    assert _estimate()["throughput"].startswith("table: ")
    assert not (home / "jobs.sqlite").exists()  # planning created no database
    _finished_job(home, "a", [60, 185, 190, 180, 185])
    _finished_job(home, "b", [185, 185, 50, 185], state=JobState.CANCELLED)
    _finished_job(home, "c", [185, 180, 190])
    _finished_job(home, "running", [900, 900, 900], state=JobState.RUNNING)
    _finished_job(home, "small", [900, 900, 900], trainer={"image_size": 16})
    _finished_job(home, "short", [900])
    est = _estimate()
    assert est["throughput"] == \
        "measured: 92.5 img/s per worker from 3 jobs on profile local (resnet18, 32 px, fp32)"
    assert est["compute_seconds"] == pytest.approx(2 * 64 / 92.5, abs=1e-4)
    assert _estimate("--set", "image_size=16")["throughput"].startswith(
        "measured: 450 img/s per worker from 1 job on profile local (resnet18, 16 px, fp32)")
    assert _estimate("--precision", "bf16")["throughput"].startswith("table: ")


def test_plan_table_names_the_measured_figure(larsctl_dirs):
    _finished_job(larsctl_dirs["home"], "a", [185, 185, 185])
    result = CliRunner().invoke(cli, ["plan", "--cluster", "local", "--recipe", str(DEMO_RECIPE)])
    assert result.exit_code == 0, result.output
    assert ("\n  throughput measured: 92.5 img/s per worker from 1 job on profile local "
            "(resnet18, 32 px, fp32)\n") in result.output


def test_an_unreadable_job_is_left_out(larsctl_dirs):
    home = larsctl_dirs["home"]
    _finished_job(home, "a", [185, 185, 185])
    _finished_job(home, "broken", [900, 900, 900])
    (home / "runs" / "broken" / "job.yaml").write_text("not: [a job spec")
    _finished_job(home, "gone", [900, 900, 900])
    for name in ("job.yaml", "metrics.jsonl"):
        (home / "runs" / "gone" / name).unlink()
    assert _estimate()["throughput"].startswith("measured: 92.5 img/s per worker from 1 job ")


def test_the_newest_matching_jobs_are_read_first(larsctl_dirs):
    home = larsctl_dirs["home"]
    for i in range(2):
        _finished_job(home, f"old{i}", [900, 900, 900])
    for i in range(NEWEST):
        _finished_job(home, f"new{i:02d}", [185, 185, 185])
    _finished_job(home, "newest_other_size", [900, 900, 900], trainer={"image_size": 16})
    assert _estimate()["throughput"].startswith(f"measured: 92.5 img/s per worker from {NEWEST} jobs ")
