"""A probe that takes long: --timeout bounds it, Ctrl-C stops it at once.

The job's "python" here is a real program that takes long (a bash script that starts a
`sleep` and waits for it, recording both process ids), so what is checked is real:
the processes doctor started, and whether any is left.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

RECIPE = ("name: folder\nmodel: resnet18\ntarget_batch: 2\nper_gpu_batch: 1\nepochs: 1\ntrain_images: 3\n"
          "trainer:\n  train_dir: {train}\n  val_dir: {val}\n  image_size: 8\n  workers: 0\n")


def slow_python(tmp_path: Path) -> tuple[Path, Path]:
    """(the script, the file where each run writes "its pid, its sleep's pid")."""
    pids = tmp_path / "probe.pids"
    script = tmp_path / "slow-python"
    script.write_text(f"#!/bin/bash\nsleep 600 &\necho \"$$ $!\" >> {pids}\nwait\n")
    script.chmod(0o755)
    return script, pids


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that is gone counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for_lines(path: Path, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} probe(s) started in {timeout} s")


def test_timeout_bounds_the_probe(doctor, tmp_path):
    script, pids = slow_python(tmp_path)
    cluster = doctor.write_profile("slow", python=str(script))
    started = time.monotonic()
    report, r = doctor.json("--cluster", cluster, "--timeout", "2")
    assert time.monotonic() - started < 30
    row = doctor.rows(report)["python"]
    assert r.returncode == 1 and row["status"] == "FAIL"
    assert row["found"] == "the probe did not finish in 2 s"
    assert "--timeout" in row["fix"]
    for line in pids.read_text().splitlines():
        assert not any(alive(int(pid)) for pid in line.split()), line


def test_bad_timeout_is_bad_input(doctor):
    r = doctor.run("--timeout", "0")
    assert r.returncode == 2 and "--timeout" in r.stderr and "Traceback" not in r.stderr


def test_ctrl_c_stops_every_probe_at_once(doctor, tmp_path):
    """SIGINT to larsctl's process group, as a terminal's Ctrl-C sends it (the probes run in
    sessions of their own, so only larsctl gets it): both probes (the stack's and the data
    scan's) are gone at once, and larsctl says so in one line."""
    script, pids = slow_python(tmp_path)
    cluster = doctor.write_profile("slow", python=str(script))
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cat").mkdir(parents=True)
    recipe = tmp_path / "folder.yaml"
    recipe.write_text(RECIPE.format(train=tmp_path / "data" / "train", val=tmp_path / "data" / "val"))
    # As from a terminal: SIGINT at its default even when the tests run where it is ignored (a
    # background job of a non-interactive shell, `nohup`: Python keeps an inherited SIG_IGN).
    proc = doctor.start("--cluster", cluster, "--recipe", str(recipe), start_new_session=True,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started = wait_for_lines(pids, 2)
    interrupted = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    r = doctor.finish(proc, timeout=30)
    assert time.monotonic() - interrupted < 5
    assert r.returncode == 130, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.strip(), r.stderr
    assert "interrupted" in r.stderr.lower() and "Traceback" not in r.stderr
    time.sleep(0.2)
    left = [pid for line in started for pid in map(int, line.split()) if alive(pid)]
    for pid in left:  # leave nothing behind for the other tests either
        os.kill(pid, signal.SIGKILL)
    assert left == []
