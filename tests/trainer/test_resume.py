"""Exact resume: SIGKILL at random steps and SIGUSR2 preemption end bit-identical to an
uninterrupted run (2 ranks, CPU, Gloo, --deterministic), and write the same gradient noise
scale at every step (its moving averages are in the checkpoint); a corrupt newest
checkpoint is reported and the previous one used."""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.trainer.helpers import (TINY, checkpoint_state, events, kill_all, records, run, start, tensors_equal,
                                   trainer_pids, wait_for)

pytestmark = pytest.mark.slow
STEPS = 14  # crosses the epoch boundary at step 11 (2 ranks x 32 x k=2 on 1437 digits)
ARGS = TINY + ["--dataset", "digits", "--batch-size", "32", "--val-batch-size", "128", "--batches-per-allreduce",
               "2", "--epochs", "2", "--warmup-epochs", "1", "--base-lr", "1", "--max-steps", str(STEPS),
               "--checkpoint-every-steps", "1", "--log-every-steps", "1", "--deterministic"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's final checkpoint and noise scales (torchrun, ddp)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert run("torchrun", 2, ARGS + ["--out-dir", str(out)], out / "log") == 0, (out / "log").read_text()[-3000:]
    state = checkpoint_state(out, STEPS)
    state["noise_scales"] = noise_scales(out)
    assert len(state["noise_scales"]) == STEPS and all(v is not None for v in state["noise_scales"].values())
    return state


def noise_scales(out) -> dict[int, float]:
    """Step -> noise_scale of the train records; a step logged again after a resume: the later one."""
    return {r["step"]: r.get("noise_scale") for r in records(out) if r["kind"] == "train"}


def assert_identical(final, reference, out):
    assert noise_scales(out) == reference["noise_scales"]  # the estimator's averages went on, not over
    for key in ("model", "optimizer"):
        assert tensors_equal(final[key], reference[key], key) == []
    assert final["scheduler"] == reference["scheduler"]
    assert (final["global_step"], final["epoch"], final["step_in_epoch"]) == \
           (reference["global_step"], reference["epoch"], reference["step_in_epoch"])


def last_step(out, skip: int = 0) -> int:
    """The newest train step logged after the first `skip` records (those of earlier runs)."""
    steps = [r["step"] for r in records(out)[skip:] if r["kind"] == "train"]
    return max(steps, default=0)


def test_sigkill_at_random_steps_then_resume_is_bit_identical(tmp_path, reference):
    seed = int(os.environ.get("RESUME_TEST_SEED", time.time_ns() % 10_000))
    rnd = random.Random(seed)
    kills = sorted(rnd.sample(range(2, STEPS - 1), 3))
    print(f"seed {seed}: SIGKILL after steps {kills}")
    out, log = tmp_path / "job", tmp_path / "log"
    for kill_at in kills:
        before = len(records(out))
        proc = start("torchrun", 2, ARGS + ["--out-dir", str(out)], log)
        wait_for(lambda: last_step(out, before) >= kill_at, 240, f"step {kill_at}", proc)
        time.sleep(rnd.uniform(0, 0.6))  # land anywhere: mid-step, mid-checkpoint write
        kill_all(proc, out)
    assert run("torchrun", 2, ARGS + ["--out-dir", str(out)], log) == 0, log.read_text()[-3000:]
    assert len(events(out, "resume")) == len(kills)
    assert events(out, "done")
    assert_identical(checkpoint_state(out, STEPS), reference, out)


def test_sigusr2_stops_all_ranks_at_one_step_exits_75_and_resumes_bit_identical(tmp_path, reference, horovod):
    """Under mpirun (Horovod engine); the signal reaches only rank 1, both ranks stop."""
    out, log = tmp_path / "job", tmp_path / "log"
    stop_at = random.Random().randrange(3, STEPS - 2)
    proc = start("mpirun", 2, ARGS + ["--out-dir", str(out)], log)
    wait_for(lambda: last_step(out) >= stop_at and len(trainer_pids(out)) == 2, 240, f"step {stop_at}", proc)
    rank1 = max(trainer_pids(out))  # either rank: the flag is agreed by an allreduce
    os.kill(rank1, signal.SIGUSR2)
    assert proc.wait(timeout=120) == 75, log.read_text()[-3000:]  # mpirun passes the ranks' 75 on
    preempted = events(out, "preempted")
    assert len(preempted) == 1
    stopped = preempted[0]["step"]
    assert events(out, "checkpoint")[-1]["step"] == stopped
    assert stopped < STEPS

    assert run("mpirun", 2, ARGS + ["--out-dir", str(out)], log) == 0, log.read_text()[-3000:]
    assert events(out, "resume")[0]["step"] == stopped
    assert_identical(checkpoint_state(out, STEPS), reference, out)


def test_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path):
    out, log = tmp_path / "job", tmp_path / "log"
    args = TINY + ["--data", "synthetic", "--num-classes", "4", "--synthetic-length", "64", "--batch-size", "8",
                   "--epochs", "1", "--warmup-epochs", "0", "--checkpoint-every-steps", "1", "--out-dir", str(out)]
    assert run("python", 1, args + ["--max-steps", "3"], log) == 0
    newest = out / "checkpoints" / "checkpoint-00000003.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
    newest.write_bytes(bytes(data))
    assert run("python", 1, args + ["--max-steps", "5"], log) == 0
    text = log.read_text()
    assert f"checkpoint {newest} SHA-256 does not match" in text
    assert events(out, "resume")[0]["step"] == 2
    assert checkpoint_state(out, 5)["global_step"] == 5
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == [f"checkpoint-0000000{s}.pt{ext}" for s in (3, 4, 5) for ext in ("", ".sha256")]  # keep 3


def test_checkpoint_of_another_model_is_bad_input(tmp_path):
    out, log = tmp_path / "job", tmp_path / "log"
    args = ["--image-size", "16", "--workers", "0", "--no-cuda", "--data", "synthetic", "--num-classes", "4",
            "--synthetic-length", "32", "--batch-size", "8", "--epochs", "1", "--warmup-epochs", "0",
            "--max-steps", "1", "--out-dir", str(out)]
    assert run("python", 1, args + ["--model", "resnet18"], log) == 0
    log.write_text("")
    assert run("python", 1, args + ["--model", "resnet34"], log) == 2
    lines = log.read_text().strip().splitlines()
    assert len(lines) == 1 and "was written for model resnet18, this run trains resnet34" in lines[0], lines


def test_a_run_resumed_at_its_last_step_validates_its_final_weights(tmp_path):
    """A preemption that lands on the last step leaves a checkpoint of it but no final validation;
    the segment that resumes there trains nothing and validates before it is done (the job's final
    accuracy, and the tracker's last point, come from it)."""
    out = tmp_path / "job"
    args = TINY + ["--dataset", "digits", "--batch-size", "32", "--val-batch-size", "128", "--epochs", "1",
                   "--warmup-epochs", "0.5", "--max-steps", "2", "--checkpoint-every-steps", "1", "--log-every-steps", "1", "--out-dir", str(out)]
    assert run("python", 1, args, tmp_path / "log1") == 0, (tmp_path / "log1").read_text()[-3000:]
    assert run("python", 1, args, tmp_path / "log2") == 0, (tmp_path / "log2").read_text()[-3000:]
    recs = records(out)
    resumed = max(i for i, r in enumerate(recs) if r.get("event") == "resume")
    after = [r["kind"] if r["kind"] != "event" else r["event"] for r in recs[resumed + 1:]]
    assert after == ["val", "done"], after
    assert recs[resumed + 1]["step"] == 2
