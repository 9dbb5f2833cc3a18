"""A sweep that cannot run is refused before anything is written or submitted: one line on
stderr naming the flag, value or point and what was expected, exit 2, no traceback.

Batches the planner cannot place are refused with the planner's own message (the same one
`larsctl plan` gives for that batch): one code path, not a second set of rules."""
from __future__ import annotations

import json

import pytest

from tests.jobs.helpers import DEMO, larsctl
from tests.sweeps.conftest import BASE, RECIPE, written


def refused(args: list[str], home) -> str:
    r = larsctl(*args, check=False)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert written(home) == [], written(home)
    assert json.loads(larsctl("jobs", "--json").stdout) == []
    return lines[0].removeprefix("Error: ")


def plan_error(*args: str) -> str:
    r = larsctl("plan", "--cluster", "local", *args, check=False)
    assert r.returncode == 2, r.stderr
    return r.stderr.strip().removeprefix("Error: ")


@pytest.mark.parametrize("flags, expected", [
    (["--batches", "32,64,32"], "--batches 32,64,32: 32 is given twice; each grid point once"),
    (["--batches", "32", "--optimizers", "sgd,sgd"], "--optimizers sgd,sgd: sgd is given twice; each grid point once"),
    (["--batches", "32", "--lr-factors", "1,0.5,1"], "--lr-factors 1,0.5,1: 1 is given twice; each grid point once"),
])
def test_duplicate_grid_points_are_refused(larsctl_dirs, flags, expected):
    args = [*BASE, *flags, "--target", "val/accuracy>=0.5"]
    assert refused(args, larsctl_dirs["home"]) == expected
    assert refused([*args, "--dry-run"], larsctl_dirs["home"]) == expected


def test_duplicate_lrs_are_refused(larsctl_dirs):
    args = ["sweep", "--cluster", "local", "--recipe", RECIPE, "--batches", "32", "--lrs", "0.1,0.2,0.1",
            "--target", "val/accuracy>=0.5"]
    assert refused(args, larsctl_dirs["home"]) == "--lrs 0.1,0.2,0.1: 0.1 is given twice; each grid point once"


def test_a_batch_larger_than_the_data_set_is_the_planners_refusal(larsctl_dirs):
    args = [*BASE, "--batches", "32,2048", "--target", "val/accuracy>=0.5"]
    message = refused(args, larsctl_dirs["home"])
    planner = plan_error("--recipe", RECIPE, "--target-batch", "2048")
    assert "2048" in planner and "1437" in planner  # the data set's training images, named
    assert message == f"sweep point b2048-sgd-lr0.8-s1: {planner}"


def test_a_batch_the_profile_cannot_divide_is_the_planners_refusal(larsctl_dirs):
    # Every point on 2 GPUs: a batch of 33 has no equal share.
    args = ["sweep", "--cluster", "local", "--recipe", DEMO, "--batches", "128,33", "--gpus", "2",
            "--lr-rule", "legw", "--target", "val/accuracy>=0.5"]
    message = refused(args, larsctl_dirs["home"])
    planner = plan_error("--recipe", DEMO, "--target-batch", "33", "--gpus", "2")
    assert message == f"sweep point b33-lars-lr1.016-s1: {planner}"


@pytest.mark.parametrize("target, expected", [
    ("val/accuracy=>0.5", "--target 'val/accuracy=>0.5': expected KIND/METRIC>=VALUE or KIND/METRIC<=VALUE, "
                          "e.g. 'val/accuracy>=0.9' or 'val/loss<=1.2'"),
    ("val/accuracy>0.5", "--target 'val/accuracy>0.5': '>' is not a target operator: a target is reached at its "
                         "value, as the trainer stops (--stop-at-val-accuracy: top-1 >= the value); use "
                         "'val/accuracy>=0.5'"),
    ("val/acc>=0.5", "--target 'val/acc>=0.5': unknown metric 'val/acc'; expected one of val/accuracy, val/top5, "
                     "val/loss, train/accuracy, train/loss"),
    ("val/accuracy>=1.5", "--target 'val/accuracy>=1.5': unreachable: val/accuracy is at most 1"),
    ("val/accuracy>=0", "--target 'val/accuracy>=0': met before any training: val/accuracy is never below 0"),
    ("val/loss<=-0.1", "--target 'val/loss<=-0.1': unreachable: val/loss stays above 0"),
    ("val/accuracy<=0.5", "--target 'val/accuracy<=0.5': val/accuracy is better higher: use '>='"),
    ("val/loss>=0.5", "--target 'val/loss>=0.5': val/loss is better lower: use '<='"),
])
def test_targets_are_one_grammar_and_bad_ones_are_refused(larsctl_dirs, target, expected):
    assert refused([*BASE, "--batches", "32", "--target", target], larsctl_dirs["home"]) == expected


def test_a_report_whose_job_directory_is_gone_names_it(larsctl_dirs):
    import shutil

    sweep_id = larsctl(*BASE[:-4], "--batches", "16,32", "--max-steps", "1", "--target", "val/accuracy>=0.99",
                       "--eval-examples", "100000").stdout.strip()
    rows = json.loads(larsctl("jobs", "--sweep", sweep_id, "--json").stdout)
    gone = rows[1]["job_dir"]
    shutil.rmtree(gone)
    r = larsctl("sweep", "report", sweep_id, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"Error: sweep {sweep_id}: ") and gone in line and "larsctl jobs --rebuild" in line, line
