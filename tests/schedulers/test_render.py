"""Rendered sbatch/PBS scripts: golden files, shellcheck, directives, injection safety.

Golden files: tests/schedulers/golden/<profile>.<sbatch|pbs>; after an intended change
regenerate them with LARSCTL_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from larsctl.schedulers.launch import LaunchError
from larsctl.schedulers import get_scheduler

FIXTURES = sorted(p.stem for p in (Path(__file__).parent / "profiles").glob("*.yaml"))
SHIPPED = sorted(p for p in (Path(__file__).resolve().parents[2] / "clusters").glob("*.yaml"))


def _request(support, profile, job_dir="/scratch/runs/20260101-000000-demo", **kw):
    spec = support.big_spec(profile)
    return get_scheduler(str(profile.scheduler)).dryrun(spec, Path(job_dir), job_id=support.JOB_ID, **kw)


# The shipped example profiles (clusters/) and the fixtures covering the other flavours.
GOLDEN_CASES = [*(f"fixture:{n}" for n in FIXTURES),
                *(f"shipped:{p.stem}" for p in SHIPPED if "scheduler: local" not in p.read_text())]


def _load(support, case: str):
    kind, name = case.split(":")
    return support.load_profile(support.PROFILES / f"{name}.yaml" if kind == "fixture" else name)


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_script_matches_golden_file(support, case):
    profile = _load(support, case)
    request = _request(support, profile, max_restarts=2)
    stem = case.split(":")[1] if case.startswith("fixture:") else case.replace(":", "-")
    golden = support.GOLDEN / f"{stem}.{'sbatch' if profile.scheduler == 'slurm' else 'pbs'}"
    if os.environ.get("LARSCTL_UPDATE_GOLDEN"):
        golden.write_text(request.script)
    assert request.script == golden.read_text(), f"{golden} differs (LARSCTL_UPDATE_GOLDEN=1 regenerates)"


@pytest.mark.parametrize("path", [*(f"fixture:{n}" for n in FIXTURES), *map(str, SHIPPED)])
@pytest.mark.parametrize("segments", [1, 3])
def test_every_rendered_script_passes_shellcheck(support, path, segments):
    profile = support.load_profile(support.PROFILES / f"{path[8:]}.yaml" if path.startswith("fixture:") else path)
    if profile.scheduler == "local":
        profile = profile.model_copy(update={"scheduler": "slurm"})
    spec = support.make_spec(profile) if path in map(str, SHIPPED) else support.big_spec(profile)
    for scheduler in ("slurm", "pbs"):
        if scheduler == "pbs" and (profile.mpi in ("srun", "srun-pmix")
                                   or (profile.engine == "ddp" and profile.mpi == "gloo" and spec.plan.nodes > 1)):
            with pytest.raises(LaunchError):  # no way to start a rank (or torchrun) per node
                get_scheduler(scheduler).dryrun(spec, Path("/w"), job_id="j")
            continue
        request = get_scheduler(scheduler).dryrun(spec, Path("/w/a b"), job_id="j", segment=segments - 1,
                                                  segments=segments, max_restarts=1)
        assert support.shellcheck(request.script) == ""


def test_sbatch_directives_sorted_and_complete(support):
    profile = support.load_profile(support.PROFILES / "slurm-v100-openmpi.yaml")
    request = _request(support, profile)
    directives = [line for line in request.script.splitlines() if line.startswith("#SBATCH")]
    names = [re.match(r"#SBATCH --([\w-]+)", d).group(1) for d in directives]
    assert names == sorted(names)
    text = "\n".join(directives)
    for expected in ("--nodes=2", "--ntasks-per-node=8", "--gres=gpu:8", "--cpus-per-task=5",
                     "--partition=gpu", "--account=proj-lars", "--time=00:25:00", "--signal=B:USR2@300",
                     "--requeue", "--open-mode=append",
                     "--output=/scratch/runs/20260101-000000-demo/logs/slurm-%j.out"):
        assert expected in text
    assert request.submit_argv == ["sbatch", "--parsable"]
    assert "module load cuda/12.1" in request.script and 'source "$HOME"/venvs/larsctl/bin/activate' in request.script


def test_gpus_per_node_directive_and_no_gpu_lines_for_cpu(support):
    profile = support.load_profile(support.PROFILES / "slurm-a100-pmix-apptainer.yaml")
    assert "#SBATCH --gpus-per-node=4" in _request(support, profile).script
    spec = support.make_spec(support.local_profile(scheduler="slurm"))
    cpu = get_scheduler("slurm").dryrun(spec, Path("/w"), job_id="j").script
    assert "--gres" not in cpu and "--gpus-per-node" not in cpu


def test_pbs_directives(support):
    profile = support.load_profile(support.PROFILES / "pbs-a100-mpich.yaml")
    script = _request(support, profile).script
    for expected in ("#PBS -N resnet50-lars-4k", "#PBS -l select=2:ncpus=64:ngpus=4:mpiprocs=4", "#PBS -l walltime=00:24:00",
                     "#PBS -q workq", "#PBS -P P12345", "#PBS -j oe", "#PBS -r y"):
        assert expected in script
    assert "larsctl_timer 1140 &" in script  # the 24 min asked for minus the 300 s margin


def test_chain_segments_get_their_own_script_and_name(support):
    profile = support.local_profile(scheduler="slurm")
    spec = support.make_spec(profile)
    s = get_scheduler("slurm")
    second = s.dryrun(spec, Path("/w"), job_id="j", segment=1, segments=3)
    assert second.script_path == Path("/w/job.1.sbatch")  # file names count segments from 0
    assert "#SBATCH --job-name=demo.2of3" in second.script


def test_newline_in_a_value_is_refused(support):
    spec = support.make_spec(support.local_profile(scheduler="slurm"))
    with pytest.raises(ValueError, match="control characters"):
        get_scheduler("slurm").dryrun(spec, Path("/w/a\nb"), job_id="j")


INJECTED = "a'b; touch {marker}"


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["slurm", "pbs"])
def test_injected_name_path_and_env_do_not_run(support, tmp_path, scheduler):
    """Hostile values make a script that passes shellcheck and runs without executing them."""
    marker = tmp_path / "injected"
    profile = support.local_profile(
        scheduler=scheduler, mpi="openmpi", name="x",
        env={"OMP_NUM_THREADS": "1", "EVIL": f"$(touch {marker})`touch {marker}`"},
        modules=[])
    spec = support.make_spec(profile, name=INJECTED.format(marker=marker))
    d = support.job_dir(tmp_path, "dir with 'quotes' and $(touch x) spaces")
    request = get_scheduler(scheduler).dryrun(spec, d, job_id="j'1", max_restarts=0)
    assert support.shellcheck(request.script) == ""
    request.script_path.write_text(request.script)
    nodefile = tmp_path / "nodes"
    nodefile.write_text("localhost\nlocalhost\n")
    env = support.fake_env(PBS_JOBID="1.pbs", PBS_NODEFILE=nodefile, PBS_O_WORKDIR=d,
                           SLURM_JOB_ID="1", SLURM_JOB_NODELIST="localhost")
    r = subprocess.run(["bash", str(request.script_path)], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    log = r.stderr + "".join(p.read_text() for p in (d / "logs").glob("*"))
    assert r.returncode == 0, log[-3000:]
    assert not marker.exists() and not (tmp_path / "x").exists() and not (d / "x").exists()
    notes = support.rank_notes(d)
    assert sorted(notes) == ["rank0", "rank1"], log[-3000:]
    assert notes["rank0"][-1] == "done"


# -- a sweep's job array ---------------------------------------------------------------------
ARRAY_CASES = ["shipped:slurm-v100", "shipped:pbs-v100"]


@pytest.mark.parametrize("case", ARRAY_CASES)
def test_job_array_scripts_match_golden_files(support, case):
    """The array's own script (directives, then the dispatch to the task's job script) and a task's
    job script, for 12 tasks at most 3 at once."""
    from larsctl.facts.sweepdir import SweepPaths

    profile = _load(support, case)
    scheduler = get_scheduler(str(profile.scheduler))
    spec = support.big_spec(profile)
    sweep = SweepPaths.of(Path("/scratch/runs"), "sweep-demo-20260101-000000-ab12")
    array = scheduler.dryrun_array(spec, sweep, 0, name=sweep.sweep_id, count=12, max_concurrent=3)
    task = scheduler.dryrun_task(spec, Path("/scratch/runs/20260101-000000-demo"), job_id=support.JOB_ID,
                                 max_restarts=2)
    ext = "sbatch" if profile.scheduler == "slurm" else "pbs"
    for text, golden in ((array.script, support.GOLDEN / f"{case.replace(':', '-')}-array.{ext}"),
                         (task.script, support.GOLDEN / f"{case.replace(':', '-')}-array-task.{ext}")):
        if os.environ.get("LARSCTL_UPDATE_GOLDEN"):
            golden.write_text(text)
        assert text == golden.read_text(), f"{golden} differs (LARSCTL_UPDATE_GOLDEN=1 regenerates)"
        assert support.shellcheck(text) == ""
    assert array.script_path == sweep.root / f"array-0.{ext}"
    if profile.scheduler == "slurm":
        assert "#SBATCH --array=0-11%3" in array.script
        assert 'restart_record' not in task.script and '"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in task.script
    else:
        assert "#PBS -J 0-11" in array.script and "#PBS -W max_run_subjobs=3" in array.script
