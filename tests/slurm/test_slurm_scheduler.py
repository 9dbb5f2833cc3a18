"""SlurmScheduler against the real test Slurm: submit, states, cancel, requeue, chains, PMIx."""
from __future__ import annotations

import sys
import time

import pytest

from larsctl.schedulers import JobState, SchedulerError, get_scheduler
from larsctl.facts.jobdir import JobPaths

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _submit(support, tmp_path, *, name="demo", mpi="openmpi", max_restarts=1, after=None, after_kind="afterany",
            dirname="job dir", **update):
    profile = support.local_profile(scheduler="slurm", mpi=mpi, **update)
    spec = support.make_spec(profile, name=name)
    d = support.job_dir(tmp_path, dirname)
    s = get_scheduler("slurm")
    request = s.dryrun(spec, d, job_id="j1", max_restarts=max_restarts)
    return s, s.schedule(request, after=after, after_kind=after_kind), d


def _wait(s, job_id, until, timeout=90, on_state=None):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = s.describe([job_id])[job_id]
        if not seen or seen[-1] != info.state:
            seen.append(info.state)
        if on_state:
            on_state(info)
        if until(info):
            return info, seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck; states seen: {seen}")


def _log(d):
    return "".join(p.read_text() for p in sorted((d / "logs").glob("*")))


def test_job_runs_to_completed_with_a_hostile_name(slurm_cluster, support, fake_trainer_env, tmp_path):
    marker = tmp_path / "injected"
    fake_trainer_env.setenv("FAKE_SECONDS", "2")
    s, job_id, d = _submit(support, tmp_path, name=f"a'b; touch {marker}", dirname="dir with spaces",
                           env={"OMP_NUM_THREADS": "1"})
    info, seen = _wait(s, job_id, lambda i: i.state.is_terminal)
    assert info.state is JobState.COMPLETED, _log(d)
    assert JobState.RUNNING in seen and seen[0] in (JobState.PENDING, JobState.RUNNING)
    assert slurm_cluster.job_field(job_id, "JobName") == "a'b;"  # scontrol cuts at the space
    assert not marker.exists()
    assert f"slurm-{job_id}.out" in {p.name for p in (d / "logs").iterdir()}
    assert "segment 0 ended: completed (the launcher exited 0)" in _log(d)
    assert sorted(support.rank_notes(d)) == ["rank0", "rank1"]


def test_describe_is_one_batch_and_knows_unknown_ids(slurm_cluster, support, fake_trainer_env, tmp_path):
    s, job_id, _ = _submit(support, tmp_path)
    infos = s.describe([job_id, "987654"])
    assert infos[job_id].state in (JobState.PENDING, JobState.RUNNING, JobState.COMPLETED)
    assert infos["987654"].state is JobState.UNKNOWN
    assert s.describe(["987654"])["987654"].state is JobState.UNKNOWN  # squeue alone would fail here
    _wait(s, job_id, lambda i: i.state.is_terminal)
    # Once squeue has forgotten a job, sacct answers; without slurmdbd, from the jobcomp file (sacct -c).
    from larsctl.schedulers.slurm import parse_sacct
    assert parse_sacct(s._sacct([job_id]))[job_id].state is JobState.COMPLETED


def test_cancel_is_cancelled_and_idempotent(slurm_cluster, support, fake_trainer_env, tmp_path):
    fake_trainer_env.setenv("FAKE_SECONDS", "120")
    s, job_id, d = _submit(support, tmp_path)
    _wait(s, job_id, lambda i: i.state is JobState.RUNNING)
    s.cancel(job_id)
    info, _ = _wait(s, job_id, lambda i: i.state.is_terminal, timeout=30)
    assert info.state is JobState.CANCELLED
    s.cancel(job_id)  # again: no error
    s.cancel("987654")  # unknown: no error
    assert JobPaths(d).restart_records() == []  # a cancelled job is not requeued


def test_exit_75_requeues_then_completes(slurm_cluster, support, fake_trainer_env, tmp_path):
    fake_trainer_env.setenv("FAKE_MODE", "requeue-once")
    s, job_id, d = _submit(support, tmp_path, max_restarts=1)
    released = []

    def release(info):
        if info.restarts and not released:
            slurm_cluster.release_requeued(job_id)
            released.append(True)

    info, seen = _wait(s, job_id, lambda i: i.state.is_terminal, on_state=release)
    assert info.state is JobState.COMPLETED and info.restarts == 1, _log(d)
    [row] = JobPaths(d).restart_records()
    assert row["restart"] == "1" and row["rc"] == "75" and row["scheduler_id"] == job_id
    notes = support.rank_notes(d)["rank0"]
    assert notes[0].startswith("start restart=0") and "start restart=1" in notes[2]


def test_usr2_before_the_limit_reaches_horovodrun_ranks_and_requeues(slurm_cluster, support, fake_trainer_env,
                                                                     tmp_path):
    """--signal=B:USR2 goes to the batch shell only; the script must pass it to the ranks."""
    fake_trainer_env.setenv("FAKE_SECONDS", "120")
    s, job_id, d = _submit(support, tmp_path, mpi="gloo", max_restarts=1)
    _wait(s, job_id, lambda i: i.state is JobState.RUNNING and len(support.rank_notes(d)) == 2)
    # What Slurm does at time limit minus the margin:
    slurm_cluster.run("scancel", "--signal=USR2", "--batch", job_id)
    released = []

    def release(info):
        if info.restarts and not released:
            slurm_cluster.release_requeued(job_id)
            released.append(True)

    info, _ = _wait(s, job_id, lambda i: i.state.is_terminal, on_state=release)
    assert info.state is JobState.COMPLETED and info.restarts == 1, _log(d)
    notes = support.rank_notes(d)
    assert all("signal SIGUSR2" in lines for lines in notes.values()), notes
    assert JobPaths(d).restart_records()[0]["signal"] == "USR2"


def test_chain_dependencies(slurm_cluster, support, fake_trainer_env, tmp_path):
    fake_trainer_env.setenv("FAKE_MODE", "fail")
    s, first, _ = _submit(support, tmp_path, dirname="seg0", max_restarts=0)
    fake_trainer_env.setenv("FAKE_MODE", "ok")
    _, anyway, _ = _submit(support, tmp_path, dirname="seg1", after=first, after_kind="afterany")
    _, only_ok, _ = _submit(support, tmp_path, dirname="seg2", after=first, after_kind="afterok")
    assert slurm_cluster.job_field(anyway, "Dependency").startswith(f"afterany:{first}")
    info, _ = _wait(s, only_ok, lambda i: i.state.is_terminal)
    assert info.state is JobState.CANCELLED  # --kill-on-invalid-dep=yes: no hanging chain
    assert s.describe([first])[first].state is JobState.FAILED
    info, _ = _wait(s, anyway, lambda i: i.state.is_terminal)
    assert info.state is JobState.COMPLETED


def test_sbatch_error_carries_its_stderr(slurm_cluster, support, tmp_path):
    with pytest.raises(SchedulerError, match="sbatch failed .*[Ii]nvalid partition"):
        _submit(support, tmp_path, partition="no-such-partition")


def test_missing_sbatch_is_a_scheduler_error(support, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SchedulerError, match="sbatch: command not found"):
        _submit(support, tmp_path)


def test_srun_pmix_two_ranks_form_one_horovod_world(slurm_cluster, tmp_path):
    """srun --mpi=pmix starts 2 ranks of one MPI world (not 2 singletons)."""
    code = ("import horovod.torch as hvd, torch; hvd.init(); "
            "print('rank', hvd.rank(), 'size', hvd.size(), 'sum', "
            "hvd.allreduce(torch.tensor([hvd.rank() + 1.0]), op=hvd.Sum).item())")
    r = slurm_cluster.run("srun", "--mpi=pmix", "-n", "2", sys.executable, "-c", code, timeout=240, check=False)
    assert r.returncode == 0, r.stderr
    lines = sorted(line for line in r.stdout.splitlines() if line.startswith("rank"))
    assert lines == ["rank 0 size 2 sum 3.0", "rank 1 size 2 sum 3.0"]


def test_unresponsive_controller_is_a_bounded_error(slurm_cluster):
    """A stopped (not dead) slurmctld: squeue would hang until its own MessageTimeout."""
    import os
    import signal

    from larsctl.schedulers.slurm import SlurmScheduler

    pid = int((slurm_cluster.root / "slurmctld.pid").read_text().split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(SchedulerError, match="squeue did not answer within 2s"):
            SlurmScheduler(timeout=2).describe(["1"])
        assert time.monotonic() - start < 10
    finally:
        os.kill(pid, signal.SIGCONT)
