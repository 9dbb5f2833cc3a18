"""Helpers for running the real trainer under the real launchers (imported by the tests).

Every run: 2 CPU processes (or 1), Gloo, OMP_NUM_THREADS=1, the builtin digits
data set materialised under $LARSCTL_DATA (shared by the session), tiny images.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PY = sys.executable

# Small and fast: resnet18 at 16x16 pixels, in-process data loading.
TINY = ["--model", "resnet18", "--image-size", "16", "--workers", "0", "--no-cuda"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_argv(launcher: str, nproc: int) -> list[str]:
    """The command line that starts `nproc` trainer ranks on this machine."""
    if launcher == "python":
        assert nproc == 1
        return [PY, "-m", "trainer"]
    if launcher == "torchrun":
        return [str(VENV_BIN / "torchrun"), "--nproc-per-node", str(nproc), "--master-port", str(free_port()),
                "-m", "trainer", "--engine", "ddp"]
    if launcher == "horovodrun":
        return [str(VENV_BIN / "horovodrun"), "--gloo", "-np", str(nproc), "-H", f"localhost:{nproc}",
                PY, "-m", "trainer", "--engine", "horovod"]
    if launcher == "mpirun":  # Open MPI; Horovod uses its MPI controller
        return ["mpirun", "-np", str(nproc), "--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
                "-x", "OMP_NUM_THREADS", "-x", "LARSCTL_DATA", "-x", "PATH",
                PY, "-m", "trainer", "--engine", "horovod"]
    if launcher == "mpirun-ddp":  # Open MPI starting ddp ranks (rank/world from OMPI_COMM_WORLD_*)
        return ["mpirun", "-np", str(nproc), "--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
                "-x", "OMP_NUM_THREADS", "-x", "LARSCTL_DATA", "-x", "PATH", "-x", "MASTER_PORT",
                PY, "-m", "trainer", "--engine", "ddp"]
    raise ValueError(launcher)


def trainer_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MASTER_PORT=str(free_port()))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        env.pop(var, None)
    return env


def start(launcher: str, nproc: int, args: list[str], log: Path) -> subprocess.Popen:
    """Start a run in its own session (so the whole launcher tree can be killed)."""
    fh = open(log, "ab")
    return subprocess.Popen(launcher_argv(launcher, nproc) + args, cwd=REPO, env=trainer_env(), stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run(launcher: str, nproc: int, args: list[str], log: Path, timeout: float = 300) -> int:
    proc = start(launcher, nproc, args, log)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"{launcher} run timed out; log:\n{log.read_text()[-3000:]}")


def records(out_dir: Path) -> list[dict]:
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events(out_dir: Path, name: str) -> list[dict]:
    return [r for r in records(out_dir) if r["kind"] == "event" and r["event"] == name]


def checkpoint_state(out_dir: Path, step: int) -> dict:
    path = out_dir / "checkpoints" / f"checkpoint-{step:08d}.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


def trainer_pids(out_dir: Path) -> list[int]:
    """PIDs of the trainer ranks (not the launchers) running with --out-dir out_dir."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if str(out_dir) not in argv or "trainer" not in argv:
            continue
        i = argv.index("trainer")
        if i >= 1 and argv[i - 1] == "-m" and not any(x.endswith(("torchrun", "horovodrun", "mpirun"))
                                                      for x in argv[:2]):
            pids.append(int(entry.name))
    return pids


def kill_all(proc: subprocess.Popen, out_dir: Path) -> None:
    """SIGKILL the launcher's session and every rank (torchrun puts ranks in sessions of their own)."""
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in trainer_pids(out_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    wait_for(lambda: not trainer_pids(out_dir), 30, "the killed ranks to disappear")


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def tensors_equal(a, b, path="") -> list[str]:
    """Paths of every tensor that differs (exact comparison) between two nested states."""
    if isinstance(a, torch.Tensor):
        return [] if isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b) else [path]
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path} keys"]
        return [d for k in a for d in tensors_equal(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} len"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in tensors_equal(x, y, f"{path}/{i}")]
    return []
