"""The same run continued on another shape (`larsctl resume --gpus N`) and on another cluster
(`--cluster OTHER`): the effective batch, the LR schedule, the data order and the step count
are kept, and the job keeps one identity.

Evidence of the same run: every train record's batch_digest (a digest of the global sample
indices of its step, the same on any split of the batch) equals the uninterrupted run's, and
the one that trainer.data.sampling gives for that step of the epoch's order.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs.helpers import digests, expected_digests, train_samples

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_stopped_half_way_goes_on_as_one_worker_with_the_same_batches(jobs, larsctl_dirs):
    """2 workers x 64 x 2 until half way, then 1 worker x 64 x 4: the same batch at every step as the
    run that never stopped, and a final validation accuracy within 1 point."""
    whole = jobs.larsctl("submit", "--cluster", "local", "--recipe", jobs.DEMO, "--follow", timeout=900).stdout
    whole_id = whole.splitlines()[0]
    reference = jobs.status(whole_id)
    job_id = jobs.larsctl("submit", "--cluster", "local", "--recipe", jobs.DEMO).stdout.strip()
    jobs.wait_for(job_id, lambda r: jobs.step(r) >= 20, timeout=600, what="half way")
    jobs.larsctl("cancel", job_id)

    plan = jobs.larsctl("resume", job_id, "--gpus", "1", "--dry-run").stdout
    assert "1 node(s) x 2 GPU(s) x 64 x k=2 = 256  1 node(s) x 1 GPU(s) x 64 x k=4 = 256" in plan
    assert "--gloo -np 1 " in plan
    jobs.larsctl("resume", job_id, "--gpus", "1")
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=900, what="COMPLETED on 1 worker")

    assert [s["shape_text"] for s in done["segments"]] == ["1x2x64x2", "1x1x64x4"]
    assert [s["cause"] for s in done["segments"]] == ["cancelled", "completed"]
    steps = reference["progress"]["total_steps"]
    assert done["progress"]["step"] == steps == 40
    ours, theirs = digests(done["job_dir"]), digests(reference["job_dir"])
    assert sorted(ours) == list(range(1, steps + 1)) and ours == theirs
    assert ours == expected_digests(steps, 256, train_samples(larsctl_dirs, 32))
    assert abs(done["progress"]["val_accuracy"] - reference["progress"]["val_accuracy"]) <= 0.01
    shown = jobs.larsctl("status", job_id).stdout
    assert "1x2x64x2" in shown and "1x1x64x4" in shown
    assert Path(done["job_dir"], "job.before-segment-1.yaml").is_file()


def test_a_shape_that_cannot_keep_the_batch_and_a_running_job_are_refused_before_anything_is_written(jobs):
    job_id = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--max-steps", "200").stdout.strip()
    row = jobs.wait_for(job_id, lambda r: jobs.step(r) >= 2, what="training")
    before = sorted(p.name for p in Path(row["job_dir"]).iterdir())
    r = jobs.larsctl("resume", job_id, "--gpus", "1", check=False)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.strip() == (f"Error: job {job_id} is RUNNING; resume it after it stops, or with --force "
                                "(which cancels it first)")
    jobs.larsctl("cancel", job_id)
    r = jobs.larsctl("resume", job_id, "--gpus", "3", check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.strip().startswith("Error: 3 GPUs cannot keep the job's effective batch 16 on cluster local")
    assert r.stderr.strip().endswith("suggestion: --gpus 2")
    r = jobs.larsctl("resume", job_id, "--cluster", "nosuch", check=False)
    assert r.returncode == 2 and r.stderr.startswith("Error: unknown cluster 'nosuch'")
    after = sorted(p.name for p in Path(row["job_dir"]).iterdir())
    assert after == before and len(jobs.status(job_id)["scheduler_ids"]) == 1


@pytest.mark.slurm
def test_a_local_job_goes_on_on_the_test_slurm(jobs, larsctl_dirs, slurm_cluster, tmp_path):
    """resume --cluster: the same job (its directory, its id, its steps) continues under Slurm."""
    jobs.write_profile(larsctl_dirs["config"], "testslurmmove", scheduler="slurm", partition="debug",
                       cpus_per_node=4, mpi="srun-pmix", engine="horovod", walltime="00:10:00", signal_margin=30,
                       venv=str(REPO / ".venv"), workdir=str(tmp_path / "slurm-runs"))
    job_id = jobs.larsctl("submit", "--cluster", "local", *jobs.SHORT, "--max-steps", "30",
                          "--set", "checkpoint_every_steps=5").stdout.strip()
    jobs.wait_for(job_id, lambda r: jobs.step(r) >= 8, what="training on the local profile")
    jobs.larsctl("cancel", job_id)
    local_id = jobs.status(job_id)["scheduler_ids"][0]
    jobs.larsctl("resume", job_id, "--cluster", "testslurmmove", "--gpus", "1")
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=600, what="COMPLETED on Slurm")
    assert done["cluster"] == "testslurmmove" and done["scheduler"] == "slurm"
    assert done["scheduler_ids"][0].isdigit() and done["previous_ids"] == [["local", local_id]]
    assert [s["shape_text"] for s in done["segments"]] == ["1x2x8x1", "1x1x8x2"]
    assert done["progress"]["step"] == 30
    assert digests(done["job_dir"]) == expected_digests(30, 16, train_samples(larsctl_dirs, 16))
    assert json.loads(jobs.larsctl("jobs", "--json").stdout)[0]["cluster"] == "testslurmmove"


def test_a_ddp_job_goes_on_as_one_worker_with_the_same_batches_and_a_pbs_script_renders(jobs, ddp_profile,
                                                                                       larsctl_dirs):
    """The ddp engine (torchrun) on the local profile: 2 x 8 x 1, then 1 x 8 x 2; and the same
    job's move to PBS renders its script through the same path as submit (no PBS server here)."""
    job_id = jobs.larsctl("submit", "--cluster", ddp_profile, *jobs.SHORT, "--max-steps", "24",
                          "--set", "checkpoint_every_steps=4").stdout.strip()
    jobs.wait_for(job_id, lambda r: jobs.step(r) >= 8, what="training under torchrun")
    jobs.larsctl("cancel", job_id)
    pbs = jobs.larsctl("resume", job_id, "--cluster", "pbs-v100", "--gpus", "2", "--dry-run").stdout
    assert "# submit: qsub " in pbs and "#PBS -l select=1:ncpus=" in pbs
    assert "1 node(s) x 2 GPU(s) x 8 x k=1 = 16" in pbs
    jobs.larsctl("resume", job_id, "--gpus", "1")
    done = jobs.wait_for(job_id, lambda r: r["state"] == "COMPLETED", timeout=600, what="COMPLETED on 1 worker")
    assert [s["shape_text"] for s in done["segments"]] == ["1x2x8x1", "1x1x8x2"]
    assert digests(done["job_dir"]) == expected_digests(24, 16, train_samples(larsctl_dirs, 16))
    assert "torch.distributed.run" in jobs.larsctl("logs", job_id).stdout


def unsubmitted_job(jobs, *args) -> tuple[str, Path]:
    """A job directory written by `larsctl script` and recorded by `jobs --rebuild` (nothing runs)."""
    script = Path(jobs.larsctl("script", "--cluster", "local", *args).stdout.strip())
    jobs.larsctl("jobs", "--rebuild", str(script.parent))
    return script.parent.name, script.parent


def test_a_model_that_does_not_fit_the_other_clusters_gpus_is_refused(jobs):
    job_id, job_dir = unsubmitted_job(jobs, *jobs.SHORT, "--precision", "bf16")
    r = jobs.larsctl("resume", job_id, "--cluster", "slurm-v100", "--gpus", "2", "--dry-run", check=False)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.strip() == "Error: precision bf16 is not supported on V100-16GB; suggestion: --precision fp16 " \
                               "(bf16 needs A100 or H100)"


def test_a_job_directory_the_other_cluster_cannot_reach_is_refused_with_the_copy_command(jobs, larsctl_dirs,
                                                                                       mount_tmpfs):
    other = mount_tmpfs("1m")  # another file system than the job directory's
    jobs.write_profile(larsctl_dirs["config"], "elsewhere", workdir=str(other / "runs"))
    job_id, job_dir = unsubmitted_job(jobs, *jobs.SHORT)
    r = jobs.larsctl("resume", job_id, "--cluster", "elsewhere", check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    target = other / "runs" / job_id
    assert r.stderr.strip() == (
        f"Error: job {job_id}: its directory {job_dir} is not on the file system of cluster elsewhere's workdir "
        f"{other / 'runs'}; nothing is copied for you: rsync -a {job_dir}/ {target}/ && larsctl jobs --rebuild "
        f"{target} && larsctl resume {job_id} --cluster elsewhere")
    assert not (other / "runs").exists() and jobs.status(job_id)["cluster"] == "local"
