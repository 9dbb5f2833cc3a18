"""larsctl.planning.from_noise (the job at another batch; clusters ranked by predicted time to the
target) and ``larsctl plan --from-noise`` on job directories built in tmp."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.config.profiles import load_profile
from larsctl.planning import from_noise
from larsctl.planning.from_noise import Candidate, Reference
from larsctl.planning.measured import Measured
from larsctl.planning.planner import PlanError, lr_by_rule
from larsctl.planning.spec import JobSpec, resolve_job
from tests.results.noise_jobs import DIGITS_TRAIN, REPO, write_job


def demo(**flags) -> JobSpec:
    """The digits demo's job spec on the local profile (base LR 2 and warmup 1 pinned, batch 256)."""
    return resolve_job("local", REPO / "jobs" / "demo.yaml", **flags)


# -- batches ------------------------------------------------------------------------------------

@pytest.mark.parametrize("b_noise, size, expected", [
    (1000.0, None, [256, 512, 1024, 2048]),   # B_noise/4 .. 4 B_noise
    (100.0, DIGITS_TRAIN, [32, 64, 128, 256]),
    (700.0, DIGITS_TRAIN, [256, 512, 1024]),  # 2048 cut by the 1,437 images
    (2522.0, DIGITS_TRAIN, [256, 512, 1024]),  # all above: the cap and below it
    (0.5, None, [1, 2]),
])
def test_candidate_batches(b_noise, size, expected):
    assert from_noise.candidate_batches(b_noise, size) == expected


def test_recommended_batch_is_the_nearest_power_of_two_at_most_the_training_images():
    assert from_noise.recommended_batch(1261.0, DIGITS_TRAIN).batch == 1024
    capped = from_noise.recommended_batch(1500.0, DIGITS_TRAIN)
    assert (capped.batch, capped.capped) == (1024, True) and "2048, is more than the data set" in capped.text()
    assert from_noise.recommended_batch(1500.0, None).batch == 2048


# -- the job at another batch --------------------------------------------------------------------

def test_a_pinned_lr_and_warmup_move_along_the_jobs_rule():
    spec, local = demo(), load_profile("local")
    new = from_noise.at_batch(spec, local, 1024, DIGITS_TRAIN).plan
    legw = {b: lr_by_rule("legw", b) for b in (256, 1024)}
    assert spec.plan.base_lr == 2.0 and spec.plan.warmup_epochs == 1.0
    assert new.base_lr == pytest.approx(2.0 * legw[1024][0] / legw[256][0])
    assert new.warmup_epochs == pytest.approx(1.0 * legw[1024][1] / legw[256][1])
    assert new.epsilon == spec.plan.epsilon
    assert (new.effective_batch, new.per_gpu_batch, new.model, new.epochs) == (1024, 64, "resnet18", 8)
    assert "the job's 2 at batch 256" in new.rules["base_lr"]


def test_an_lr_from_the_rule_stays_the_rule():
    spec = demo(base_lr=lr_by_rule("legw", 256)[0], warmup_epochs=lr_by_rule("legw", 256)[1])
    new = from_noise.at_batch(spec, load_profile("local"), 1024, DIGITS_TRAIN).plan
    assert (new.base_lr, new.warmup_epochs) == lr_by_rule("legw", 1024)[:2]
    assert new.rules["base_lr"].startswith("legw:")


def test_the_jobs_per_gpu_batch_is_kept_where_it_divides():
    spec, v100 = demo(), load_profile("slurm-v100")
    assert from_noise.at_batch(spec, v100, 512, DIGITS_TRAIN).plan.per_gpu_batch == 64
    assert from_noise.at_batch(spec, v100, 32, DIGITS_TRAIN).plan.per_gpu_batch == 32


def test_more_than_the_training_images_is_the_planners_refusal():
    with pytest.raises(PlanError, match="more than the 1437 training images"):
        from_noise.at_batch(demo(), load_profile("local"), 2048, DIGITS_TRAIN)


# -- S(B) and the pick ---------------------------------------------------------------------------

def test_steps_follow_mccandlish():
    ref = Reference(batch=256, steps=200, steps_from="test", b_noise=256.0, estimator="sgd")
    assert ref.s_min == 100.0  # S(B0) = S_min (1 + 256/256)
    assert ref.steps_at(512) == 150.0 and ref.steps_at(128) == 300.0


def cand(cluster, seconds, gpus):
    return Candidate(cluster, 256, "shape", gpus, steps=100.0, step_seconds=seconds / 100, throughput="table")


def test_the_fastest_is_picked_unless_one_close_to_it_saves_gpu_hours():
    fastest, pick_why = from_noise.choose([cand("a", 100, 8), cand("b", 200, 1)])
    assert fastest.cluster == "a" and pick_why.startswith("it is the fastest")
    # b: 5% slower on half the GPUs (47.5% fewer GPU-hours): picked, and said why
    pick, why = from_noise.choose([cand("a", 100, 8), cand("b", 105, 4)])
    assert pick.cluster == "b" and "within 5% of the fastest (a B=256" in why and "48% fewer GPU-hours" in why
    # 20% slower, or only 20% fewer GPU-hours: the fastest
    assert from_noise.choose([cand("a", 100, 8), cand("b", 120, 1)])[0].cluster == "a"
    assert from_noise.choose([cand("a", 100, 10), cand("b", 101, 8)])[0].cluster == "a"


def test_rank_by_predicted_time_with_measured_throughput_where_jobs_ran():
    spec = demo()
    profiles = [load_profile("local"), load_profile("slurm-v100")]
    ref = Reference(256, 200, "test", 300.0, "sgd")

    def measured(profile, model, size, precision):  # finished jobs on local trained at 50 img/s per worker
        return Measured(50.0, 3, profile, model, size, precision) if profile == "local" else None

    ranking = from_noise.rank(spec, profiles, ref, DIGITS_TRAIN, measured)
    times = [c.seconds for c in ranking.candidates]
    assert times == sorted(times)
    batches = from_noise.candidate_batches(300.0, DIGITS_TRAIN)
    assert {(c.cluster, c.batch) for c in ranking.candidates} == {(p.name, b) for p in profiles for b in batches}
    local = [c for c in ranking.candidates if c.cluster == "local"]
    assert all(c.throughput.startswith("measured: 50.0 img/s per worker") for c in local)
    for c in ranking.candidates:
        assert c.steps == pytest.approx(ref.steps_at(c.batch))
        assert c.gpu_hours == pytest.approx(c.steps * c.step_seconds * c.gpus / 3600)
    assert ranking.pick == from_noise.choose(ranking.candidates)[0]
    text = from_noise.render(ranking, "job")
    assert text.splitlines()[-1] == f"pick: {ranking.pick.cluster} B={ranking.pick.batch} ({ranking.pick.shape}) " \
                                    f"because {ranking.why}"


TINY = ("name: tiny\nscheduler: local\nnodes: 1\ngpus_per_node: 1\ngpu_type: cpu\ncpus_per_node: 1\n"
        "interconnect_gbps: 10\nmpi: gloo\nengine: horovod\nwalltime: '00:01:01'\nsignal_margin: 60\n"
        "workdir: $LARSCTL_HOME/runs\n")  # a job may run 1 s: no epoch of the demo fits


def test_what_the_planner_cannot_place_is_listed_with_its_reason_and_none_placed_is_refused(user_profile):
    user_profile(name="tiny", text=TINY)
    ref = Reference(256, 200, "test", 300.0, "sgd")
    ranking = from_noise.rank(demo(), [load_profile("local"), load_profile("tiny")], ref, DIGITS_TRAIN)
    assert {c.cluster for c in ranking.candidates} == {"local"}
    assert [r.batch for r in ranking.refused] == from_noise.candidate_batches(300.0, DIGITS_TRAIN)
    assert all(r.cluster == "tiny" and r.reason.startswith("one epoch takes") for r in ranking.refused)
    assert "Not placed by the planner:\n  tiny B=128: one epoch takes" in from_noise.render(ranking, "job")
    with pytest.raises(PlanError, match="no cluster can place any batch from 128 to 1024; e.g. tiny B=128: one epoch"):
        from_noise.rank(demo(), [load_profile("tiny")], ref, DIGITS_TRAIN)


# -- larsctl plan --from-noise -------------------------------------------------------------------

def plan(*args: str):
    return CliRunner().invoke(cli, ["plan", *args])


def test_plan_from_noise_ranks_the_clusters(tmp_path):
    # a LARS job at batch 256 that reached val/accuracy 0.9 at step 150, B_noise (LARS) 300
    job = write_job(tmp_path / "job", steps=200, lars=300.0, trainer={"stop_at_val_accuracy": 0.9},
                    val=[(100, 0.8), (150, 0.92)])
    result = plan("--from-noise", str(job), "--cluster", "local", "--cluster", "slurm-v100", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    ref = data["reference"]
    assert (ref["batch"], ref["steps"], ref["estimator"]) == (256, 150, "lars-preconditioned")
    assert ref["s_min"] == pytest.approx(150 / (1 + 300 / 256))
    assert "reached val/accuracy>=0.9 at step 150" in ref["steps_from"]
    seconds = [c["seconds"] for c in data["candidates"]]
    assert seconds == sorted(seconds) and {c["cluster"] for c in data["candidates"]} == {"local", "slurm-v100"}
    assert {c["batch"] for c in data["candidates"]} == {128, 256, 512, 1024}
    assert data["pick"] in data["candidates"] and data["rule"] == from_noise.PICK_RULE
    text = plan("--from-noise", str(job), "-c", "local", "-c", "slurm-v100").output
    last = text.splitlines()[-1]
    assert last.startswith(f"pick: {data['pick']['cluster']} B={data['pick']['batch']} (") and " because " in last


@pytest.mark.parametrize("args, words", [
    (["--cluster", "local", "--cluster", "nosuch"], ["unknown cluster 'nosuch'"]),
    (["--target-batch", "512"], ["--from-noise plans from the job's own job.yaml", "--target-batch"]),
    (["--set", "image_size=16"], ["--set"]),
])
def test_plan_from_noise_refusals(tmp_path, args, words):
    job = write_job(tmp_path / "job", steps=200)
    result = plan("--from-noise", str(job), *args)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    for word in words:
        assert word in lines[0]


def test_plan_from_noise_refuses_too_few_steps_and_a_run_without_job_yaml(tmp_path):
    short = write_job(tmp_path / "short", steps=40)
    result = plan("--from-noise", str(short), "--cluster", "local")
    assert result.exit_code == 2 and "short: " in result.stderr and "60 more" in result.stderr
    bare = write_job(tmp_path / "bare", steps=200)
    (bare / "job.yaml").unlink()
    result = plan("--from-noise", str(bare), "--cluster", "local")
    assert result.exit_code == 2 and "bare: no job.yaml" in result.stderr


def test_several_clusters_without_from_noise_are_refused():
    result = plan("--cluster", "local", "--cluster", "slurm-v100", "--target-batch", "256")
    assert result.exit_code == 2 and "only --from-noise compares clusters" in result.stderr
    assert plan("--cluster", "local", "--target-batch", "256", "--model", "resnet18").exit_code == 0
    assert plan("--target-batch", "256", "--model", "resnet18").output.startswith("Plan resnet18-b256 on local ")


def test_the_help_states_the_pick_rule():
    text = " ".join(plan("--help").output.split())
    assert "--from-noise" in text and "larsctl plan --from-noise" in text
    assert (f"the fastest, unless another is within {from_noise.NEAR_FASTEST:.0%} of its time at "
            f"{from_noise.FEWER_GPU_HOURS:.0%} or more fewer GPU-hours") in text
