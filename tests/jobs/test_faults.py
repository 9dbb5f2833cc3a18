"""Bad input and faults: one clear line, the right exit code, nothing half-written or lost."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.facts.jobdir import atomic_write

DEMO = str(Path(__file__).resolve().parents[2] / "jobs" / "demo.yaml")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("args, message", [
    (["status", "nope"], "Error: unknown job id 'nope' (see `larsctl jobs`)"),
    (["logs", "nope"], "Error: unknown job id 'nope' (see `larsctl jobs`)"),
    (["cancel", "nope"], "Error: unknown job id 'nope' (see `larsctl jobs`)"),
    (["resume", "nope"], "Error: unknown job id 'nope' (see `larsctl jobs`)"),
    (["submit", "--cluster", "local"],
     "Error: no target batch: give --target-batch (or --gpus) or a --recipe that sets target_batch"),
    (["submit", "--cluster", "local", "--recipe", "no/such.yaml"], "Error: no/such.yaml: no such recipe file"),
    (["submit", "--cluster", "local", "--recipe", DEMO, "--set", "=3"],
     "Error: --set '=3': expected KEY=VALUE with a trainer option name as KEY"),
    (["submit", "--cluster", "local", "--recipe", DEMO, "--set", "image_size=big"],
     "Error: --set image_size: expected an integer (got 'big')"),
    (["jobs", "--rebuild", "/no/such/dir"], "Error: /no/such/dir: no such job directory"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == message
    assert r.stdout == ""


def test_unknown_cluster_names_the_choices():
    r = run("submit", "--cluster", "nosuch", "--target-batch", "64")
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: unknown cluster 'nosuch'; expected one of: local")
    assert len(r.stderr.strip().splitlines()) == 1


def test_rank_out_of_range_and_deleted_job_dir(tmp_path, larsctl_dirs):
    """`script` writes a job directory without submitting; rebuild records it; then delete it."""
    r = run("script", "--cluster", "local", "--recipe", DEMO)
    assert r.exit_code == 0, r.output
    script = Path(r.stdout.strip())
    job_dir = script.parent
    assert script.is_file() and os.access(script, os.X_OK)
    assert (job_dir / "job.yaml").is_file()
    assert json.loads(run("jobs", "--json").stdout) == []  # not submitted, not recorded
    assert run("jobs", "--rebuild", str(job_dir)).exit_code == 0
    (row,) = json.loads(run("jobs", "--json").stdout)
    assert row["id"] == job_dir.name and row["cluster"] == "local"

    r = run("logs", job_dir.name, "--rank", "2")
    assert r.exit_code == 2
    assert r.stderr.strip() == f"Error: --rank 2: job {job_dir.name} has 2 ranks (0..1)"

    shutil.rmtree(job_dir)
    r = run("status", job_dir.name)
    assert r.exit_code == 0
    assert f"Warning: job {job_dir.name}: its job directory {job_dir} was deleted" in r.stderr
    for cmd in ("logs", "resume"):
        r = run(cmd, job_dir.name)
        assert r.exit_code == 1
        assert r.stderr.startswith(f"Error: job {job_dir.name}: its job directory {job_dir} was deleted")


def test_sbatch_missing_is_one_line_and_leaves_nothing(larsctl_dirs, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no sbatch anywhere
    workdir = tmp_path / "runs"
    profile = larsctl_dirs["config"] / "clusters"
    profile.mkdir()
    src = (Path(__file__).resolve().parents[2] / "clusters" / "slurm-v100.yaml").read_text()
    (profile / "nosbatch.yaml").write_text(
        src.replace("name: slurm-v100", "name: nosbatch").split("\nworkdir:")[0]
        + f"\nworkdir: {workdir}\n" + "\n".join(src.split("\nworkdir:")[1].splitlines()[1:]) + "\n")
    r = subprocess.run([sys.executable, "-m", "larsctl", "submit", "--cluster", "nosbatch",
                        "--target-batch", "256", "--set", "dataset=digits"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == ("Error: submitting job.sbatch failed: sbatch: command not found "
                                "(is this a Slurm login node?)")
    assert not any(workdir.iterdir()) if workdir.exists() else True
    assert json.loads(run("jobs", "--json").stdout) == []


@pytest.fixture
def tiny_tmpfs(mount_tmpfs):
    """A 64 KiB tmpfs, filled to the last byte."""
    mnt = mount_tmpfs("64k")
    (mnt / "runs").mkdir()
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 512):
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return mnt


def test_full_disk_while_writing_the_job_dir(tiny_tmpfs, larsctl_dirs, jobs):
    jobs.write_profile(larsctl_dirs["config"], "fulldisk", workdir=str(tiny_tmpfs / "runs"))
    r = run("submit", "--cluster", "fulldisk", "--recipe", DEMO)
    assert r.exit_code == 1, r.output
    line = r.stderr.strip()
    assert line.startswith(f"Error: no space left while writing {tiny_tmpfs / 'runs'}/demo-")
    assert line.endswith("No space left on device") and "\n" not in line
    assert list((tiny_tmpfs / "runs").iterdir()) == []  # no half-made job directory
    assert json.loads(run("jobs", "--json").stdout) == []  # and no record


def test_atomic_write_past_the_file_size_limit_keeps_the_old_file(tmp_path):
    """RLIMIT_FSIZE makes write() fail with EFBIG (no root needed); the old content stays."""
    (tmp_path / "job").mkdir()
    target = tmp_path / "job" / "job.yaml"
    target.write_text("old\n")
    code = ("import sys; from larsctl.facts.jobdir import atomic_write; from larsctl.errors import Failure\n"
            "try:\n    atomic_write(sys.argv[1], 'x' * 100000)\n"
            "except Failure as e:\n    print(e.message); sys.exit(1)\n")
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
    assert r.returncode == 1, r.stderr
    assert r.stdout.strip() == f"no space left while writing {target}: File too large"
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["job.yaml"]  # no temp file left
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n"


def test_unreachable_scheduler_keeps_the_last_state_and_exits_1(tmp_path, larsctl_dirs):
    """A Slurm job whose squeue cannot be run: a warning line, the recorded state, exit 1."""
    r = run("script", "--cluster", "local", "--recipe", DEMO)
    job_dir = Path(r.stdout.strip()).parent
    record = {"id": job_dir.name, "name": "demo", "cluster": "some-slurm", "scheduler": "slurm",
              "scheduler_ids": ["4242"], "job_dir": str(job_dir), "state": "RUNNING", "restarts": 0,
              "created": 1.0, "updated": 1.0}
    (job_dir / "job.json").write_text(json.dumps(record))
    assert run("jobs", "--rebuild", str(job_dir)).exit_code == 0
    env = dict(os.environ, PATH=str(tmp_path))  # no squeue
    p = subprocess.run([sys.executable, "-m", "larsctl", "status", job_dir.name], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 1
    assert re.fullmatch(r"Warning: slurm scheduler not answering since \d\d:\d\d: squeue: command not found "
                        r"\(is this a Slurm login node\?\); showing the last known state", p.stderr.strip()), p.stderr
    assert job_dir.name in p.stdout and "RUNNING" in p.stdout


def test_unset_variables_in_paths_refuse_a_real_submit(monkeypatch, larsctl_dirs):
    """The shipped examples keep $SCRATCH and ${IMAGENET_DIR} for the user to set:
    a dry run shows them as written, a real submit or script refuses, writing nothing."""
    recipe = str(Path(__file__).resolve().parents[2] / "jobs" / "resnet50-lars-4k.yaml")
    monkeypatch.delenv("SCRATCH", raising=False)
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    for command in ("submit", "script"):
        r = run(command, "--cluster", "slurm-v100", "--recipe", recipe)
        assert r.exit_code == 2, r.output
        assert r.output.strip().splitlines() == [
            "Error: environment variable(s) IMAGENET_DIR, SCRATCH used in the job's paths (profile workdir "
            "'$SCRATCH/larsctl' or the recipe's data dirs) are not set; export them first"]
    assert run("submit", "--cluster", "slurm-v100", "--recipe", recipe, "--dry-run").exit_code == 0
    assert not list(larsctl_dirs["home"].glob("runs/*"))
