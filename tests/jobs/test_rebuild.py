"""`larsctl jobs --rebuild DIR`: a lost record comes back with what the directory knows, and a
job whose state cannot be known says why."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from larsctl.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_never_submitted_job_is_unknown_and_says_why(larsctl_dirs):
    job_dir = Path(run("script", "--cluster", "local", "--recipe", "jobs/demo.yaml").stdout.strip()).parent
    assert run("jobs", "--rebuild", str(job_dir)).exit_code == 0
    (row,) = json.loads(run("jobs", "--json").stdout)
    assert row["state"] == "UNKNOWN" and row["reason"].startswith("no scheduler id: rebuilt from its job directory")
    shown = run("status", job_dir.name).stdout
    assert f"{job_dir.name}: UNKNOWN: no scheduler id" in shown


def test_the_scheduler_ids_come_back_from_the_segments_own_records(larsctl_dirs):
    """Without job.json: each segment's batch script recorded its scheduler id when it began
    (python -m trainer.supervisor begin, run here as the script runs it)."""
    job_dir = Path(run("script", "--cluster", "local", "--recipe", "jobs/demo.yaml").stdout.strip()).parent
    ids = [f"{job_dir}#0", f"{job_dir}#1"]
    for segment, sid in enumerate(ids):
        r = subprocess.run([sys.executable, "-m", "trainer.supervisor", "begin", "--job-dir", str(job_dir),
                            "--scheduler-id", sid, "--segment", str(segment)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert run("jobs", "--rebuild", str(job_dir)).exit_code == 0
    (row,) = json.loads(run("jobs", "--json").stdout)
    assert row["scheduler_ids"] == ids
    assert row["state"] != "UNKNOWN" and row["reason"]  # the local scheduler answered for them
