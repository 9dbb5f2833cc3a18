"""``larsctl clusters`` and ``larsctl plan`` through Click's CliRunner and as a real process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from larsctl.cli import cli

REPO = Path(__file__).resolve().parents[2]
LARSCTL = Path(sys.executable).parent / "larsctl"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("args", [["clusters"], ["clusters", "list"], ["clusters", "show"],
                                  ["clusters", "validate"], ["plan"]])
def test_help_has_an_example(args):
    result = run(*args, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output and "larsctl " in result.output


def test_clusters_list_table_and_json(user_profile):
    user_profile(name="mine", nodes=8)
    table = run("clusters", "list")
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split() == ["NAME", "SCHEDULER", "NODES", "GPUS/NODE", "GPU", "NET", "GBIT/S",
                                "WALLTIME", "FROM"]
    assert [line.split()[0] for line in lines[1:]] == \
        ["local", "mine", "pbs-v100", "slurm-p100", "slurm-v100"]
    assert lines[2].split() == ["mine", "slurm", "8", "4", "V100-16GB", "100", "48:00:00", "user"]
    data = json.loads(run("clusters", "list", "--json").output)
    assert [p["name"] for p in data] == ["local", "mine", "pbs-v100", "slurm-p100", "slurm-v100"]
    assert data[0]["gpu_type"] == "cpu" and data[0]["source"].endswith("clusters/local.yaml")


def test_clusters_show(tmp_path):
    result = run("clusters", "show", "slurm-p100")
    assert result.exit_code == 0
    assert result.output.startswith(f"# {REPO / 'clusters/slurm-p100.yaml'} (shipped)\n")
    shown = yaml.safe_load(result.output)
    assert shown["gpus_per_node"] == 1 and shown["modules"][0] == "daint-gpu"
    assert shown["signal_margin"] == 300 and shown["python"] == "python3"
    as_json = json.loads(run("clusters", "show", "local", "--json").output)
    assert as_json["workdir"] == "$LARSCTL_HOME/runs"


def test_clusters_show_unknown_is_exit_2_one_line():
    result = run("clusters", "show", "nosuch")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("Error: unknown cluster 'nosuch'; expected one of: local, ")


def test_clusters_validate_all_and_files(user_profile, tmp_path):
    everything = run("clusters", "validate")
    assert everything.exit_code == 0
    assert everything.output.splitlines() == [
        f"ok: {REPO / 'clusters' / name}.yaml ({name})"
        for name in ("local", "pbs-v100", "slurm-p100", "slurm-v100")]
    bad = user_profile(name="bad", nodes="many")
    result = run("clusters", "validate", str(REPO / "clusters/local.yaml"), str(bad))
    assert result.exit_code == 2
    assert result.stdout == f"ok: {REPO / 'clusters/local.yaml'} (local)\n"
    assert result.stderr == f"Error: {bad}:3: nodes: expected a valid integer (got 'many')\n"
    # validating everything includes the user directory
    assert run("clusters", "validate").exit_code == 2


def test_plan_table_names_rules_and_assumptions():
    result = run("plan", "--cluster", "slurm-v100", "--recipe",
                 str(REPO / "jobs/resnet50-lars-32k.yaml"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "effective batch    32768 = 256 GPUs x 64 x 2" in out
    assert "nodes              64 x 4 GPUs" in out
    assert "base LR            32 (2^5)" in out and "legw: 2^2*sqrt(32768/512) = 2^5" in out
    assert "warmup epochs      14" in out and "recipe override (legw gives 10)" in out
    assert "epsilon            0" in out and "recipe override (legw gives 1e-05)" in out
    assert "Assumptions\n  - throughput table: 390 img/s per GPU" in out
    assert "ring model 2(N-1)/N*S/B" in out


def test_plan_json_and_show_spec(monkeypatch):
    monkeypatch.setenv("IMAGENET_DIR", "/data/imagenet")
    data = json.loads(run("plan", "--cluster", "pbs-v100", "--target-batch", "8192",
                          "--json").output)
    assert (data["plan"]["gpus"], data["plan"]["nodes"], data["plan"]["batches_per_allreduce"]) \
        == (32, 4, 2)
    assert data["plan"]["base_lr"] == 16.0 and data["plan"]["warmup_epochs"] == 2.5
    spec = yaml.safe_load(run("plan", "--cluster", "slurm-v100", "--recipe",
                              str(REPO / "jobs/resnet50-lars-1k.yaml"), "--show-spec").output)
    assert spec["trainer"]["train_dir"] == "/data/imagenet/train"
    assert spec["trainer"]["batch_size"] == 128 and spec["trainer"]["lr_scaling"] == "keep"
    assert spec["job"]["cluster"] == "slurm-v100"


@pytest.mark.parametrize("args,message", [
    (["--cluster", "slurm-v100", "--target-batch", "1000"],
     "Error: target batch 1000 is not a multiple of 128 (per-GPU batch 128); nearest feasible "
     "targets: 896 or 1024"),
    (["--cluster", "slurm-v100", "--target-batch", "8192", "--gpus", "1024"],
     "Error: --gpus 1024 is more than cluster slurm-v100 has (64 nodes x 4 = 256); suggestion: "
     "--gpus 256 (the planner accumulates the rest)"),
    (["--cluster", "nosuch", "--target-batch", "256"], None),
    (["--cluster", "local"],
     "Error: no target batch: give --target-batch (or --gpus) or a --recipe that sets "
     "target_batch"),
])
def test_plan_bad_input_is_exit_2_one_line(args, message):
    result = run("plan", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    if message:
        assert result.stderr.rstrip("\n") == message


def test_real_process_bad_input_exits_2_with_one_stderr_line(tmp_path):
    bad = tmp_path / "typo.yaml"  # outside the user dir: read only when named
    bad.write_text((REPO / "clusters/slurm-v100.yaml").read_text().replace(
        'walltime: "48:00:00"', "walltime: 48h"))
    line = next(n for n, text in enumerate(bad.read_text().splitlines(), 1) if text.startswith("walltime:"))
    env = dict(os.environ)
    for args, expected in [
        (["plan", "--cluster", "slurm-v100", "--target-batch", "1000"],
         "Error: target batch 1000 is not a multiple of 128 (per-GPU batch 128); nearest "
         "feasible targets: 896 or 1024"),
        (["plan", "--cluster", str(bad), "--target-batch", "512"],
         f'Error: {bad}:{line}: walltime: expected "HH:MM:SS" or "D-HH:MM:SS" (longer than zero) '
         "(got '48h')"),
    ]:
        proc = subprocess.run([str(LARSCTL), *args], capture_output=True, text=True, env=env,
                              timeout=60)
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert proc.stderr.splitlines() == [expected]


def test_real_process_plans_the_demo():
    proc = subprocess.run([str(LARSCTL), "plan", "--recipe", str(REPO / "jobs/demo.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "effective batch    256 = 2 workers x 64 x 2" in proc.stdout
