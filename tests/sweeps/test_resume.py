"""A sweep is a file, then jobs: a submission that stops half way (here a disk that really fills up
under the profile's workdir, a tmpfs the test mounts) leaves sweep.json saying how far it got, and
`larsctl sweep resume` completes it, each point with one job.  A lost index entry comes back from
the sweep directory with `larsctl jobs --rebuild`."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.jobs.helpers import larsctl
from tests.sweeps.conftest import RECIPE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

ARGS = ["sweep", "--cluster", "local", "--recipe", RECIPE, "--batches", "16,32,64,128,256,512", "--optimizers", "sgd",
        "--lrs", "0.05", "--target", "val/accuracy>=0.99", "--max-steps", "1", "--max-concurrent", "1"]


@pytest.fixture
def small_workdir(larsctl_dirs):
    """The local profile's workdir ($LARSCTL_HOME/runs) on a 256 KiB tmpfs, 160 KiB of it taken."""
    runs = larsctl_dirs["home"] / "runs"
    runs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(runs)], check=True)
    ballast = runs / "ballast"
    ballast.write_bytes(b"\0" * 160 * 1024)
    try:
        yield runs, ballast
    finally:
        waiting = [row["id"] for row in json.loads(larsctl("jobs", "--json", check=False).stdout or "[]")
                   if row["state"] in ("PENDING", "RUNNING", "REQUEUED", "SUBMITTING")]
        if waiting:  # one call: a cancel each took most of this test's time
            larsctl("cancel", *waiting, check=False)
        subprocess.run(["umount", "-l", str(runs)], check=False)


def test_a_submission_stopped_by_a_full_disk_is_completed_by_sweep_resume(small_workdir, larsctl_dirs):
    runs, ballast = small_workdir
    r = larsctl(*ARGS, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[0]
    assert line.startswith("Error: no space left while writing ") and "`larsctl sweep resume sweep-" in line, line
    sweep_id = line.split("`larsctl sweep resume ")[1].split("`")[0]
    sweep_json = runs / "sweeps" / sweep_id / "sweep.json"
    stopped = json.loads(sweep_json.read_text())
    assert stopped["state"] != "submitted" and len(stopped["points"]) == 6

    ballast.unlink()
    r = larsctl("sweep", "resume", sweep_id)
    assert r.stdout.strip() == sweep_id
    done = json.loads(sweep_json.read_text())
    assert done["state"] == "submitted"
    jobs = json.loads(larsctl("jobs", "--sweep", sweep_id, "--json").stdout)
    assert sorted(p["job"] for p in done["points"]) == sorted(row["id"] for row in jobs)  # each point one job
    assert all(row["scheduler_ids"] for row in jobs)  # and every job submitted
    job_dirs = {p.name for p in runs.iterdir() if p.name not in ("sweeps", "ballast")}
    assert job_dirs == {row["id"] for row in jobs}  # nothing left over from the stopped submission

    # The index entry lost (a new job database): the sweep directory brings it and its jobs back.
    for db in larsctl_dirs["home"].glob("jobs.sqlite*"):
        db.unlink()
    out = larsctl("jobs", "--rebuild", str(runs / "sweeps" / sweep_id)).stdout.splitlines()
    assert out[0] == f"rebuilt sweep {sweep_id} from {runs / 'sweeps' / sweep_id}" and len(out) == 7
    assert json.loads(larsctl("sweep", "list", "--json").stdout)[0]["id"] == sweep_id
    assert len(json.loads(larsctl("jobs", "--sweep", sweep_id, "--json").stdout)) == 6
