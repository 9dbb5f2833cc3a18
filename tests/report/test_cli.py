"""larsctl report / compare / tensorboard as a user runs them (CliRunner and real processes)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from larsctl.cli import cli
from larsctl.commands.report import free_port
from larsctl.jobs.registry import JobRecord, Registry


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def register(job_dir: Path, job_id: str) -> None:
    registry = Registry()
    registry.add(JobRecord(id=job_id, name=job_dir.name, cluster="local", scheduler="local",
                           job_dir=str(job_dir), state="COMPLETED"))
    registry.close()


@pytest.mark.parametrize("command", ["report", "compare", "tensorboard"])
def test_help_shows_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "Example" in result.output and "larsctl " + command in result.output


def test_report_by_job_id_and_by_directory_writes_png_and_html(make_run, tmp_path):
    register(make_run("small", batch=64), "small-20261125-000000-aaaa")
    large = make_run("large", batch=512)
    out = tmp_path / "report.png"
    result = run("report", "small-20261125-000000-aaaa", large, "--out", out, "--size", "900x500")
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {out} (900x500 px, 2 jobs)\n"
    assert Image.open(out).size == (900, 500)
    html = tmp_path / "report.html"
    result = run("report", "small-20261125-000000-aaaa", large, "-o", html, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [job["name"] for job in data["jobs"]] == ["small-20261125-000000-aaaa", "large"]
    assert "data:image/png;base64," in html.read_text()


def test_compare_lists_every_registered_job_with_metrics(make_run, tmp_path):
    register(make_run("b4k", batch=4096), "b4k-1")
    register(make_run("b512", batch=512), "b512-1")
    pending = tmp_path / "pending"
    (pending / "tensorboard").mkdir(parents=True)
    register(pending, "pending-1")  # no metrics yet: left out of the table, not an error
    result = run("compare", "--json")
    assert result.exit_code == 0, result.output
    assert [(row["name"], row["effective_batch"]) for row in json.loads(result.output)] == [
        ("b512-1", 512), ("b4k-1", 4096)]
    text = run("compare").output
    assert re.search(r"\|\s+b512-1\s+\|\s+512\s+\|", text.splitlines()[2])
    assert run("report", "--table", "b512-1", "b4k-1").output == run("compare", "b512-1", "b4k-1").output


@pytest.mark.parametrize("args, message", [
    (("report", "nope-123"), "unknown job id 'nope-123'"),
    (("compare", "./missing-dir"), "missing-dir: no such job directory"),
    (("compare",), "no job with metrics yet"),
    (("report", "{run}", "--out", "r.svg"), "expected a file name ending in .png or .html"),
    (("report", "{run}", "--size", "big"), "--size 'big': expected WIDTHxHEIGHT in pixels"),
    (("report", "{run}", "--metric", "val/acc"), "--metric: unknown metric 'val/acc'"),
    (("report", "{empty}"), "no metrics yet"),
    (("tensorboard", "{plain}"), "no tensorboard/ directory"),
])
def test_bad_input_is_one_line_and_exit_2(make_run, tmp_path, args, message):
    paths = {"run": make_run("ok"), "empty": tmp_path / "empty", "plain": tmp_path / "plain"}
    (paths["empty"] / "tensorboard").mkdir(parents=True)
    paths["plain"].mkdir()
    result = CliRunner().invoke(cli, [a.format(**paths) for a in args])
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output


def test_tensorboard_serves_the_jobs_on_loopback_until_stopped(make_run):
    small, large = make_run("small", batch=64), make_run("large", batch=512)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "larsctl", "tensorboard", str(small), str(large),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy())
    try:
        line = proc.stdout.readline()  # printed once TensorBoard answers
        assert re.fullmatch(rf"TensorBoard at http://127\.0\.0\.1:{port}/ \(2 jobs; Ctrl-C to stop\)\n", line), (
            line + proc.stderr.read() if proc.poll() is not None else line)
        url = f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        # Both jobs are runs named after them ("<name>/." in TensorBoard's terms), scalars loaded.
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(url + "data/plugin/scalars/tags", timeout=10) as response:
                tags = json.load(response)
            if len(tags) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sorted(tags) == ["large/.", "small/."]
        assert "val/accuracy" in tags["large/."]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    with pytest.raises(OSError):  # TensorBoard went with it: nothing listens any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)


def test_tensorboard_refuses_a_port_in_use(make_run):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run("tensorboard", make_run("x"), "--port", busy.getsockname()[1])
    assert result.exit_code == 2 and "already in use on 127.0.0.1" in result.output
