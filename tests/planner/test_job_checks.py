"""A job that cannot run, or that would train something other than its plan, is refused
before anything is written or submitted (one line, exit 2).

``--set`` may not touch what the planner decides (it names the flag to use instead);
what it may set is part of the recipe's trainer section before planning, so the
estimate and the walltime check see it.  The whole resolved job goes through the
trainer's own validation.  Job paths are the planner's: a recipe cannot move the
event files or checkpoints away from where report, tensorboard and resume look.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from larsctl.cli import cli

REPO = Path(__file__).resolve().parents[2]
R512 = str(REPO / "jobs" / "resnet50-lars-512.yaml")


@pytest.fixture
def cluster_env(tmp_path, monkeypatch):
    """The shipped Slurm profiles' $SCRATCH and the recipes' $IMAGENET_DIR, in tmp_path."""
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("WORK", str(tmp_path / "work"))
    monkeypatch.setenv("IMAGENET_DIR", str(tmp_path / "imagenet"))
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _written(tmp_path, larsctl_dirs) -> list[str]:
    """Job directories or records left behind."""
    left = [str(p) for p in (tmp_path / "scratch").rglob("job.yaml")] if (tmp_path / "scratch").exists() else []
    db = larsctl_dirs["home"] / "jobs.sqlite"
    if db.exists():
        import sqlite3

        left += [row[0] for row in sqlite3.connect(db).execute("SELECT id FROM jobs")]
    runs = larsctl_dirs["home"] / "runs"
    if runs.exists():
        left += [str(p) for p in runs.iterdir()]
    return left


@pytest.mark.parametrize(("setting", "flag"), [
    ("base_lr=99", "--base-lr"), ("batch_size=7", "--per-gpu-batch"), ("lr_scaling=linear", "--base-lr"),
    ("epochs=3", "--epochs"), ("batches_per_allreduce=2", "--target-batch"), ("amp=fp16", "--precision"),
    ("warmup_epochs=1", "--warmup-epochs"), ("epsilon=0", "--epsilon"), ("model=resnet18", "--model"),
])
@pytest.mark.parametrize("command", ["script", "submit"])
def test_set_may_not_contradict_the_plan(cluster_env, larsctl_dirs, command, setting, flag):
    r = run(command, "--cluster", "slurm-v100", "--recipe", R512, "--set", setting)
    assert r.exit_code == 2, r.output
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert f"--set {setting.split('=')[0]}" in line and flag in line, line
    assert not _written(cluster_env, larsctl_dirs)


@pytest.mark.parametrize("setting", ["out_dir=/elsewhere", "log_dir=/elsewhere",
                                     "checkpoint_format=/x/c-{step}.pt"])
def test_set_may_not_move_the_job_paths(cluster_env, larsctl_dirs, setting):
    r = run("script", "--cluster", "slurm-v100", "--recipe", R512, "--set", setting)
    assert r.exit_code == 2, r.output
    assert "job directory" in r.output and not _written(cluster_env, larsctl_dirs)


@pytest.mark.parametrize("key", ["out_dir", "log_dir", "checkpoint_format"])
def test_a_recipe_may_not_move_the_job_paths(tmp_path, key):
    recipe = tmp_path / "moved.yaml"
    recipe.write_text(f"name: moved\ntarget_batch: 16\nper_gpu_batch: 8\ntrainer:\n  dataset: digits\n"
                      f"  {key}: /elsewhere/c-{{step}}.pt\n")
    r = run("plan", "--cluster", "local", "--recipe", str(recipe))
    assert r.exit_code == 2, r.output
    assert f"{recipe}:6: trainer.{key}:" in r.output and "job directory" in r.output


def test_set_image_size_reaches_the_estimate(cluster_env):
    def compute(*extra):
        r = run("plan", "--cluster", "slurm-v100", "--recipe", R512, "--json", *extra)
        assert r.exit_code == 0, r.output
        data = json.loads(r.output)
        return data["plan"]["estimate"]["compute_seconds"], data["trainer"]

    full, _ = compute()
    small, trainer = compute("--set", "image_size=112")
    assert trainer["image_size"] == 112
    assert small == pytest.approx(full / 4, rel=0.01)  # a quarter of the pixels


def test_set_checkpoint_every_steps_reaches_the_walltime_check(cluster_env, user_profile):
    user_profile(name="short", nodes=1, gpus_per_node=1, walltime="00:30:00")  # an epoch takes ~55 min
    refused = run("plan", "--cluster", "short", "--recipe", R512)
    assert refused.exit_code == 2 and "checkpoint_every_steps" in refused.output
    ok = run("plan", "--cluster", "short", "--recipe", R512, "--set", "checkpoint_every_steps=200")
    assert ok.exit_code == 0, ok.output


def test_a_warmup_longer_than_the_run_is_refused_by_plan():
    r = run("plan", "--cluster", "slurm-v100", "--target-batch", "32768", "--epochs", "8")
    assert r.exit_code == 2, r.output
    assert "warmup" in r.output and "8" in r.output


@pytest.mark.parametrize("command", [["script", "--cluster", "slurm-v100"],
                                     ["submit", "--cluster", "slurm-v100"],
                                     ["submit", "--cluster", "local", "--per-gpu-batch", "8", "--epochs", "1",
                                      "--model", "resnet18"]])
def test_a_job_without_data_is_refused_and_nothing_is_left(cluster_env, larsctl_dirs, command):
    r = run(*command, "--target-batch", "512" if "slurm-v100" in command else "16")
    assert r.exit_code == 2, r.output
    assert "no data" in r.output
    assert not _written(cluster_env, larsctl_dirs)


def test_the_shipped_recipes_still_plan_and_render(cluster_env):
    for recipe in (str(REPO / "jobs/demo.yaml"), R512, str(REPO / "jobs/resnet50-lars-32k.yaml")):
        r = run("submit", "--cluster", "slurm-v100", "--recipe", recipe, "--dry-run")
        assert r.exit_code == 0, r.output
    spec = yaml.safe_load(run("plan", "--cluster", "local", "--recipe", str(REPO / "jobs/demo.yaml"),
                              "--show-spec").output)
    assert spec["trainer"]["dataset"] == "digits"


def test_dry_run_names_the_variables_it_shows_unexpanded(monkeypatch):
    monkeypatch.delenv("SCRATCH", raising=False)
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    r = CliRunner().invoke(cli, ["submit", "--cluster", "slurm-v100", "--recipe", R512, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "Warning: IMAGENET_DIR, SCRATCH not set here: shown as written; a real submit refuses them" \
        in r.stderr
    assert "$SCRATCH/larsctl/" in r.stdout
