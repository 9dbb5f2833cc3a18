"""The walltime a job asks for: its estimate with a margin, capped by the profile's maximum.

Asking for the profile's maximum (48 h for a job estimated at 1 h 19 min) keeps a job
out of backfill.  Each job asks for max(need x factor, need + minimum) + the signal
margin, in whole minutes, at most the profile's walltime; a job whose estimate exceeds
that walltime is split into chained jobs, each asking for its share.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from larsctl.cli import cli
from larsctl.config.profiles import ProfileError, load_profile, read_profile
from larsctl.planning.planner import Cluster, PlanRequest, make_plan
from larsctl.planning.spec import JobSpec, resolve_job
from larsctl.planning.walltime import job_walltime, request_walltime
from larsctl.schedulers import get_scheduler
from tests.planner.conftest import REPO

H = 3600
MARGIN = {"factor": 1.5, "minimum_seconds": 600}

# (work s, start-up s, profile walltime s, signal margin s) -> (asked, jobs, capped)
REQUESTS = {
    "demo": ((67, 15, 24 * H, 60), ("00:13:00", 1, False)),           # 82 s + 10 min + 60 s
    "1h19m_on_48h": ((4620, 120, 48 * H, 300), ("02:04:00", 1, False)),  # 4740 x 1.5 + 300
    "factor_wins_over_minimum": ((10 * H - 120, 120, 48 * H, 300), ("15:05:00", 1, False)),
    "capped_40h_on_48h": ((40 * H, 120, 48 * H, 300), ("48:00:00", 1, True)),
    "two_jobs_of_30h": ((60 * H, 120, 48 * H, 300), ("45:08:00", 2, False)),
    "three_jobs_capped": ((100 * H, 120, 48 * H, 300), ("48:00:00", 3, True)),
    "start_up_beyond_a_tiny_walltime": ((12, 15, 15, 5), ("00:00:15", 2, True)),
}


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_each_job_asks_for_its_estimate_with_the_margin(case):
    (work, startup, maximum, signal), (text, jobs, capped) = REQUESTS[case]
    wt = request_walltime(work_seconds=work, startup_seconds=startup, maximum_seconds=maximum,
                          maximum_text=None, signal_margin_seconds=signal, **MARGIN)
    assert (wt.text, wt.jobs, wt.capped) == (text, jobs, capped)
    assert wt.need_seconds == pytest.approx(startup + work / jobs)
    # the signal margin fits inside what is asked, and the work of each job before it
    assert signal < wt.seconds <= maximum
    if not capped:
        assert wt.seconds % 60 == 0
        assert wt.seconds - signal >= max(1.5 * wt.need_seconds, wt.need_seconds + 600)
        assert wt.seconds - signal - 60 < max(1.5 * wt.need_seconds, wt.need_seconds + 600)


# (factor, minimum s) -> asked for 1 h of need (3480 s of work, 120 s start-up) on 48 h, margin 300
MARGINS = {(1.5, 600): "01:35:00", (1.0, 0): "01:05:00", (2.0, 0): "02:05:00",
           (1.0, 1800): "01:35:00", (1.2, 900): "01:20:00"}


@pytest.mark.parametrize("margin", sorted(MARGINS))
def test_the_margin_is_a_factor_with_a_fixed_minimum(margin):
    factor, minimum = margin
    wt = request_walltime(work_seconds=3480, startup_seconds=120, maximum_seconds=48 * H,
                          maximum_text=None, signal_margin_seconds=300, factor=factor,
                          minimum_seconds=minimum)
    assert wt.text == MARGINS[margin]


def test_a_capped_request_keeps_the_profiles_own_form():
    wt = request_walltime(work_seconds=30 * H, startup_seconds=120, maximum_seconds=36 * H,
                          maximum_text="1-12:00:00", signal_margin_seconds=300, **MARGIN)
    assert (wt.text, wt.seconds, wt.capped) == ("1-12:00:00", 36 * H, True)
    assert "the profile's maximum" in wt.reason


def test_the_reason_states_the_margin():
    wt = request_walltime(work_seconds=4620, startup_seconds=120, maximum_seconds=48 * H,
                          maximum_text="48:00:00", signal_margin_seconds=300, **MARGIN)
    assert wt.reason == ("estimate 1h19m x 1.5 (at least + 10m00s) = 1h58m, + 300s signal margin, "
                         "in whole minutes; the profile allows 48:00:00")
    two = request_walltime(work_seconds=60 * H, startup_seconds=120, maximum_seconds=48 * H,
                           maximum_text="48:00:00", signal_margin_seconds=300, **MARGIN)
    assert two.reason.startswith("estimate 60h00m of work in 2 chained jobs (47h53m each after "
                                 "start-up and signal margin); each: estimate 30h02m x 1.5 ")


# -- through the planner and the profile -----------------------------------------------------
V100 = Cluster("c", 64, 4, "V100-16GB", 100.0, 48 * H, 300)


def test_the_plan_carries_the_request_and_the_job_count():
    plan = make_plan(V100, PlanRequest(8192, epochs=2))
    assert plan.walltime.jobs == plan.jobs_needed == 1
    assert plan.walltime.need_seconds == pytest.approx(plan.estimate.total_seconds)
    assert plan.walltime.seconds < 2 * H
    long = make_plan(Cluster("c", 1, 1, "V100-16GB", 100.0, 48 * H, 300), PlanRequest(128, epochs=90))
    assert long.walltime.jobs == long.jobs_needed > 1
    assert long.walltime.need_seconds <= 48 * H - 300


def test_the_profile_sets_the_margin(tmp_path):
    base = (REPO / "clusters/slurm-v100.yaml").read_text()
    path = tmp_path / "m.yaml"
    path.write_text(base + "walltime_margin:\n  factor: 2\n  minimum: \"05:00\"\n")
    cluster = Cluster.of(read_profile(path))
    assert (cluster.walltime_factor, cluster.walltime_minimum_seconds) == (2.0, 300)
    default = Cluster.of(load_profile("slurm-v100"))
    assert (default.walltime_factor, default.walltime_minimum_seconds) == (1.5, 600)
    plan = make_plan(cluster, PlanRequest(8192, epochs=2))
    need = plan.walltime.need_seconds
    assert plan.walltime.seconds == 60 * -(-(max(2 * need, need + 300) + 300) // 60)


# lines appended to a profile -> the one-line error after "<file>:<line>: "
MARGIN_ERRORS = {
    "factor_below_one": (["walltime_margin:", "  factor: 0.5"],
                         "walltime_margin.factor: expected >= 1 (got 0.5)"),
    "minimum_form": (["walltime_margin:", "  minimum: 10m"],
                     "walltime_margin.minimum: expected seconds or \"MM:SS\" (got '10m')"),
    "unknown_key": (["walltime_margin:", "  percent: 50"],
                    "walltime_margin.percent: unknown key; expected one of: factor, minimum (got 50)"),
    "not_a_mapping": (["walltime_margin: 1.5"],
                      "walltime_margin: expected a mapping with factor and minimum (got 1.5)"),
}


@pytest.mark.parametrize("case", sorted(MARGIN_ERRORS))
def test_bad_walltime_margin_is_one_line(tmp_path, case):
    lines, message = MARGIN_ERRORS[case]
    path = tmp_path / "m.yaml"
    path.write_text((REPO / "clusters/slurm-v100.yaml").read_text() + "\n".join(lines) + "\n")
    with pytest.raises(ProfileError) as info:
        read_profile(path)
    assert re.fullmatch(re.escape(str(path)) + r":\d+: " + re.escape(message), info.value.message), \
        info.value.message


# -- the batch scripts ask for it ------------------------------------------------------------
def _spec():
    return resolve_job("slurm-v100", REPO / "jobs/resnet50-lars-4k.yaml", gpus=8, epochs=2)


def test_sbatch_asks_for_the_request_and_the_signal_fits():
    spec = _spec()
    wt = spec.plan.walltime
    assert not wt.capped and wt.seconds < 2 * H
    script = get_scheduler("slurm").dryrun(spec, Path("/w/j"), job_id="j").script
    assert f"#SBATCH --time={wt.text}\n" in script and "--time=48:00:00" not in script
    assert "#SBATCH --signal=B:USR2@300\n" in script and wt.seconds > 300


def test_pbs_asks_for_the_request_and_arms_its_timer_inside_it():
    profile = load_profile("pbs-v100")
    spec = resolve_job(profile, REPO / "jobs/resnet50-lars-4k.yaml", gpus=8, epochs=2)
    wt = spec.plan.walltime
    script = get_scheduler("pbs").dryrun(spec, Path("/w/j"), job_id="j").script
    assert f"#PBS -l walltime={wt.text}\n" in script and "walltime=24:00:00" not in script
    assert f"larsctl_timer {wt.seconds - profile.signal_margin_seconds} &\n" in script


def test_every_segment_of_a_chain_asks_for_its_share():
    spec = resolve_job("slurm-v100", REPO / "jobs/resnet50-lars-4k.yaml", gpus=1, epochs=90)
    wt = spec.plan.walltime
    assert wt.jobs > 1 and wt.seconds <= 48 * H
    for segment in range(3):
        script = get_scheduler("slurm").dryrun(spec, Path("/w/j"), job_id="j", segment=segment,
                                               segments=3).script
        assert f"#SBATCH --time={wt.text}\n" in script


def test_a_job_yaml_from_before_asks_for_the_profiles_walltime():
    data = _spec().to_dict()
    del data["plan"]["walltime"]
    old = JobSpec.from_yaml(yaml.safe_dump(data))
    assert old.plan.walltime is None
    assert job_walltime(old).text == "48:00:00"
    script = get_scheduler("slurm").dryrun(old, Path("/w/j"), job_id="j").script
    assert "#SBATCH --time=48:00:00\n" in script
    again = JobSpec.from_yaml(_spec().to_yaml())
    assert again.plan.walltime == _spec().plan.walltime


# -- the plan says what it asks for and why --------------------------------------------------
def test_plan_shows_the_request_and_why():
    args = ["plan", "--cluster", "local", "--recipe", str(REPO / "jobs/demo.yaml")]
    out = CliRunner().invoke(cli, args).output
    assert re.search(r"\nWalltime\n  request 00:1\d:00 per job, 1 job: estimate \S+ x 1\.5 "
                     r"\(at least \+ 10m00s\) = \S+, \+ 60s signal margin, in whole minutes; "
                     r"the profile allows 24:00:00\n", out), out
    data = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)["plan"]["walltime"]
    assert data["text"].startswith("00:1") and data["jobs"] == 1 and data["factor"] == 1.5
    assert data["reason"].startswith("estimate ")
