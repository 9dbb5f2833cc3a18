"""`larsctl doctor` end to end: the real CLI, the real probe in the venv's Python, real tools."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

STATUS_LINE = re.compile(r"^(ok|warn|FAIL)\s{2,}(\S+(?: \S+)?)\s{2,}(.*)$")


def text_rows(stdout: str) -> list[tuple[str, str]]:
    """(status, name) of each row of the text table (names have at most one space)."""
    rows = []
    for line in stdout.splitlines():
        match = STATUS_LINE.match(line)
        if match:
            rows.append((match.group(1), match.group(2)))
    return rows


def test_local_profile_is_healthy_and_json_lists_the_same_rows(doctor):
    # The table and the JSON form, run side by side (each is a full doctor run).
    text_proc, json_proc = doctor.start(), doctor.start("--json")
    r, rj = doctor.finish(text_proc), doctor.finish(json_proc)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\x1b[" not in r.stdout  # no colours when not on a terminal
    assert re.search(r"^Result: (ok|warn) ", r.stdout, re.M), r.stdout
    report = json.loads(rj.stdout)
    assert rj.returncode == 0 and report["exit_code"] == 0 and report["cluster"] == "local"
    assert [(row["status"], row["name"]) for row in report["checks"]] == text_rows(r.stdout)

    rows = doctor.rows(report)
    for row in report["checks"]:
        assert row["status"] in ("ok", "warn"), row
        assert (row["status"] == "warn") == bool(row["fix"]), row  # a warning says what to do
    # The Python side ran in the job's interpreter: for local without a venv, larsctl's own.
    assert sys.executable in rows["python"]["found"]
    for name in ("trainer", "torch", "gpus", "torchvision", "dali", "horovod", "workdir", "scheduler"):
        assert rows[name]["status"] == "ok", rows[name]
    assert str(doctor.tmp_path) in rows["workdir"]["found"]  # $LARSCTL_HOME/runs of this test
    # local: mpi gloo -> `python -m horovod.runner.launch --gloo`, so Horovod needs Gloo
    assert rows["launcher horovodrun"]["status"] == "ok"
    assert "Gloo yes" in rows["horovod ops"]["found"] and rows["horovod ops"]["status"] == "ok"


def test_slurm_profile_without_sbatch_on_path_fails_naming_it(doctor):
    report, r = doctor.json("--cluster", "slurm-v100", path=doctor.path_without("sbatch"))
    assert r.returncode == 1 and report["result"] == "FAIL"
    row = doctor.rows(report)["slurm commands"]
    assert row["status"] == "FAIL"
    assert row["found"].startswith("not on PATH: sbatch (found squeue")  # only sbatch is missing
    assert "login node" in row["fix"] and "module load slurm" in row["fix"]


@pytest.mark.slurm
def test_profile_on_the_test_slurm_passes(doctor, slurm_cluster, tmp_path):
    cluster = doctor.write_profile(
        "testslurm", scheduler="slurm", partition="debug", gpu_type="cpu", mpi="openmpi",
        engine="horovod", cpus_per_node=4, walltime="00:10:00", signal_margin=30,
        venv=str(doctor.REPO / ".venv"), workdir=str(tmp_path / "runs"))
    report, r = doctor.json("--cluster", cluster)
    rows = doctor.rows(report)
    assert r.returncode == 0, report
    assert [row["name"] for row in report["checks"] if row["status"] != "ok"] == []
    assert rows["slurm commands"]["found"].startswith("sbatch, squeue, sacct, scancel, scontrol in ")
    assert rows["slurm controller"]["found"].startswith("answers (sinfo): partitions debug* (up)")
    assert rows["slurm partition"]["found"] == "debug (up)"
    assert rows["venv"]["status"] == "ok"
    assert str(doctor.REPO / ".venv") in rows["python"]["found"]  # the probe ran in the profile's venv
    assert "Open MPI" in rows["launcher mpirun"]["found"]
    assert "mpi openmpi needs MPI" in rows["horovod ops"]["found"]


def test_workdir_that_cannot_be_created_fails_naming_it(doctor, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file\n")
    workdir = blocker / "runs"
    cluster = doctor.write_profile("badworkdir", workdir=str(workdir))
    r = doctor.run("--cluster", cluster)
    assert r.returncode == 1, r.stdout
    lines = [line for line in r.stdout.splitlines() if line.startswith("FAIL")]
    assert len(lines) == 1, r.stdout
    assert re.match(rf"FAIL +workdir +{re.escape(str(workdir))}: cannot be created: "
                    rf"{re.escape(str(blocker))} is a file, not a directory$", lines[0])
    assert "fix: set workdir: in" in r.stdout


def test_openmpi_profile_without_mpirun_on_path_fails_naming_it(doctor):
    cluster = doctor.write_profile("localompi", mpi="openmpi")
    report, r = doctor.json("--cluster", cluster, path=doctor.path_without("mpirun"))
    rows = doctor.rows(report)
    assert r.returncode == 1
    assert [row["name"] for row in report["checks"] if row["status"] == "FAIL"] == ["launcher mpirun"]
    assert rows["launcher mpirun"]["found"].startswith("mpirun not on PATH")
    assert "Open MPI" in rows["launcher mpirun"]["fix"]


def _image_folder(root: Path, classes: list[str]) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        (root / name / "0.png").write_bytes(b"")  # ImageFolder lists files; nothing is decoded here
    return root


def test_recipe_whose_val_classes_differ_fails_naming_the_class(doctor, tmp_path):
    train = _image_folder(tmp_path / "data" / "train", ["cat", "dog", "fox"])
    val = _image_folder(tmp_path / "data" / "val", ["cat", "dog"])
    recipe = tmp_path / "folder.yaml"
    recipe.write_text(f"name: folder\nmodel: resnet18\ntarget_batch: 2\nper_gpu_batch: 1\nepochs: 1\n"
                      f"train_images: 3\ntrainer:\n  train_dir: {train}\n  val_dir: {val}\n"
                      "  image_size: 8\n  workers: 0\n")
    report, r = doctor.json("--recipe", str(recipe))
    rows = doctor.rows(report)
    assert r.returncode == 1
    assert rows["recipe"]["status"] == "ok" and rows["trainer options"]["status"] == "ok"
    assert rows["data train"] == {"status": "ok", "name": "data train",
                                  "found": f"{train}: 3 classes, 3 images", "fix": ""}
    assert rows["data classes"]["status"] == "FAIL"
    assert "only in train ['fox']" in rows["data classes"]["found"]
    assert [row["name"] for row in report["checks"] if row["status"] == "FAIL"] == ["data classes"]


def test_bad_input_exits_2_with_one_line(doctor):
    r = doctor.run("--cluster", "no-such-cluster")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("Error: unknown cluster 'no-such-cluster'")

    r = doctor.run("--recipe", "jobs/no-such-recipe.yaml")
    assert r.returncode == 2 and r.stderr == "Error: jobs/no-such-recipe.yaml: no such recipe file\n"

    (doctor.config_dir / "clusters").mkdir()
    (doctor.config_dir / "clusters" / "broken.yaml").write_text(
        (doctor.REPO / "clusters" / "local.yaml").read_text().replace("nodes: 1", "nodes: 0")
        .replace("name: local", "name: broken"))
    r = doctor.run("--cluster", "broken")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "broken.yaml:" in r.stderr and "nodes" in r.stderr


def test_demo_recipe_needs_no_data_files_and_larsctl_imports_no_torch(doctor):
    # run_doctor in a fresh interpreter: the probe imports torch and Horovod, larsctl must not.
    code = ("import json, sys; from larsctl.doctor import run_doctor; "
            "report = run_doctor('local', 'jobs/demo.yaml'); "
            "heavy = [m for m in ('torch', 'horovod', 'torchvision', 'nvidia.dali') if m in sys.modules]; "
            "print(json.dumps({'report': report.to_dict(), 'heavy': heavy}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=doctor.REPO)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["heavy"] == []
    report, rows = out["report"], doctor.rows(out["report"])
    assert report["exit_code"] == 0, report
    assert rows["recipe"]["found"] == "demo: batch 256 = 2 workers x 64 x 2 on 1 node(s)"
    assert rows["data"]["status"] == "ok" and rows["data"]["found"].startswith("builtin digits set")
    assert "not needed by this recipe" in rows["dali"]["found"]


def test_the_profiles_python_is_the_one_checked(doctor):
    cluster = doctor.write_profile("nopython", python="python9.9-larsctl-test")
    report, r = doctor.json("--cluster", cluster)
    rows = doctor.rows(report)
    assert r.returncode == 1
    assert rows["python"]["status"] == "FAIL"
    assert rows["python"]["found"].startswith("`python9.9-larsctl-test` did not start here: ")
    assert "torch" not in rows  # nothing else was checked in some other interpreter
