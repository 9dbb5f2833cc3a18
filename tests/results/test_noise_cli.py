"""``larsctl noise`` through Click's CliRunner on job directories built in tmp: the estimator for the
job's optimizer, the refusals (too few measured steps, an unknown cluster), the recommended batch capped
by the training images and planned from job.yaml (LR re-planned, a relative recipe path not re-read)."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.planning.planner import lr_by_rule
from tests.results.noise_jobs import write_job


def run(*args: str):
    return CliRunner().invoke(cli, ["noise", *args])


def one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    assert result.stdout == ""  # nothing printed before the refusal
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0]


def test_help_has_an_example():
    result = CliRunner().invoke(cli, ["noise", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "noise_scale_lars" in result.output


def test_too_few_measured_steps_exit_2_naming_the_job_and_how_many_more(tmp_path):
    job = write_job(tmp_path / "short-job", steps=40)
    one_line_error(run(str(job)), "short-job:", "40 optimizer steps", "at least 100", "60 more")


def test_an_unknown_cluster_is_an_error(tmp_path):
    job = write_job(tmp_path / "job", steps=200)
    one_line_error(run(str(job), "--cluster", "nosuch"), "nosuch")
    one_line_error(run(str(job), "--cluster", "nosuch", "--json"), "nosuch")


@pytest.mark.parametrize("optimizer, estimator, b_noise", [
    ("lars", "lars-preconditioned", 1500.0), ("sgd", "sgd", 300.0),
    (None, "lars-preconditioned", 1500.0),  # no base_op in job.yaml: the trainer's default, LARS
])
def test_the_noise_scale_of_the_jobs_optimizer(tmp_path, optimizer, estimator, b_noise):
    job = write_job(tmp_path / "job", steps=200, optimizer=optimizer, sgd=300.0, lars=1500.0)
    assert ("base_op" in (job / "job.yaml").read_text()) == bool(optimizer)
    data = json.loads(run(str(job), "--json").output)
    assert data["estimator"] == estimator and data["summary"]["recommended"] == pytest.approx(b_noise)
    assert (optimizer or "lars").upper() in data["estimator_why"]
    text = run(str(job)).output
    assert f"Estimator: {estimator}" in text


def test_the_recommendation_is_capped_by_the_training_images_and_planned_with_the_lr_rule(tmp_path):
    # B_noise 1500 on digits' 1,437 training images: 2048 would be the nearest power of two.
    job = write_job(tmp_path / "job", steps=200, lars=1500.0)
    result = run(str(job), "--cluster", "local", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["recommended_batch"]["batch"] == 1024 and data["recommended_batch"]["capped"]
    plan = data["plan"]["plan"]
    assert plan["effective_batch"] == 1024 and plan["per_gpu_batch"] == 64
    # The demo pinned base LR 2.0 and warmup 1 epoch at batch 256: moved along LEGW, not kept.
    legw = {b: lr_by_rule("legw", b) for b in (256, 1024)}
    assert plan["base_lr"] == pytest.approx(2.0 * legw[1024][0] / legw[256][0]) == pytest.approx(4.0)
    assert plan["warmup_epochs"] == pytest.approx(1.0 * legw[1024][1] / legw[256][1])
    assert data["plan"]["trainer"]["base_lr"] == pytest.approx(4.0)
    assert "the job's 2 at batch 256" in plan["rules"]["base_lr"]
    text = run(str(job), "--cluster", "local").output
    assert "capped by the 1,437 training images" in text and "Plan for the recommended batch, 1024:" in text


@pytest.mark.parametrize("cwd_recipe", [None, "model: resnet50\ntarget_batch: 512\nname: other\n"])
def test_a_relative_recipe_path_in_job_yaml_does_not_matter_where_the_user_is(tmp_path, monkeypatch, cwd_recipe):
    """job.yaml records the recipe as it was given at submit (jobs/demo.yaml, relative to where the
    user was then).  From another directory that path named no file (the plan was refused: 'no such
    recipe file') or another recipe; the plan comes from job.yaml, what ran."""
    job = write_job(tmp_path / "job", steps=200, sgd=200.0, optimizer="sgd")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "jobs").mkdir(parents=True)
    if cwd_recipe:
        (elsewhere / "jobs" / "demo.yaml").write_text(cwd_recipe)
    monkeypatch.chdir(elsewhere)
    result = run(str(job), "--cluster", "local", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert "error" not in data["plan"], data["plan"]
    assert data["plan"]["plan"]["model"] == "resnet18" and data["plan"]["plan"]["effective_batch"] == 256
    assert data["plan"]["trainer"]["dataset"] == "digits"


def test_a_batch_the_planner_cannot_place_shows_the_planners_reason(tmp_path, larsctl_dirs):
    # One CPU worker whose job may run 61 s with a 60 s signal margin: no epoch fits.
    clusters = larsctl_dirs["config"] / "clusters"
    clusters.mkdir()
    (clusters / "tiny.yaml").write_text(
        "name: tiny\nscheduler: local\nnodes: 1\ngpus_per_node: 1\ngpu_type: cpu\ncpus_per_node: 1\n"
        "interconnect_gbps: 10\nmpi: gloo\nengine: horovod\nwalltime: '00:01:01'\nsignal_margin: 60\n"
        "workdir: $LARSCTL_HOME/runs\n")
    job = write_job(tmp_path / "job", steps=200, lars=1500.0)
    result = run(str(job), "--cluster", "tiny")
    assert result.exit_code == 0, result.output
    assert "Plan for an effective batch of 1024 on tiny: one epoch takes" in result.output
    data = json.loads(run(str(job), "--cluster", "tiny", "--json").output)
    assert data["plan"]["error"].startswith("one epoch takes")
    assert not math.isnan(data["summary"]["recommended"])
