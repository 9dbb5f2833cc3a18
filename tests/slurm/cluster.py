"""A real single-node Slurm for the tests, from Debian's packages, without systemd.

Everything lives in one state directory: a private munged (own socket and key,
run as the munge user), slurm.conf on free ports, slurmctld and slurmd logs,
spool and state, and the jobcomp text file.  Several can run side by side (each
helper or CI job gets its own ports and node name).  Clients find it through
``SLURM_CONF``, which :meth:`TestSlurm.env` returns.

By hand:
    .venv/bin/python tests/slurm/cluster.py start /tmp/test-slurm   # prints `export SLURM_CONF=...`
    .venv/bin/python tests/slurm/cluster.py stop /tmp/test-slurm
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEBIAN_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PARTITION = "debug"
# A higher-tier partition whose jobs preempt (cancel) debug jobs: how tests make a real
# PREEMPTED job (Slurm PreemptMode=CANCEL).
URGENT_PARTITION = "urgent"
# Four CPUs even on a 2-core machine, so a 2-rank job and a second job can run at once.
MIN_CPUS = 4
CRED_EXPIRE = 5  # seconds


def shared_settings(jobcomp: Path) -> list[str]:
    """slurm.conf lines every test Slurm shares (this single-node one and tests/multinode's)."""
    return [
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # No systemd or cgroup v1 here: track processes by parentage.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        # sacct -c reads this file when there is no slurmdbd.
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={jobcomp}",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2,bf_interval=2",
        # Nodes may claim more CPUs than the machine has, and come back on their own.
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        "MinJobAge=600",
    ]


def missing_tools() -> list[str]:
    """Binaries of the Debian packages that are not installed."""
    tools = ("slurmctld", "slurmd", "sbatch", "squeue", "munged", "mpirun")
    return [t for t in tools if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> tuple[int, int]:
    """CPUs and RealMemory (MB) from `slurmd -C`, so the node line matches the machine."""
    out = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))
    mem = int(re.search(r"RealMemory=(\d+)", out).group(1))
    return cpus, mem


def _has_pmix() -> bool:
    return any(Path("/usr/lib").glob("*/slurm-wlm/mpi_pmix*.so"))


class TestSlurm:
    """Configure, start and stop one private Slurm under ``root``."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_dir = self.root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        # The real host name: horovodrun and mpirun then see the node as local (no ssh).
        self.node = socket.gethostname().split(".")[0]
        self.jobcomp = self.root / "jobcomp.txt"

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    # -- configuration -------------------------------------------------------
    def slurm_conf(self, ctld_port: int, slurmd_port: int) -> str:
        cpus, mem = _node_hardware()
        r = self.root
        lines = [
            "ClusterName=larsctl-test",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire is also how long a requeued job waits before it may start again
            # (default 120 s); a step started while the old credential is still revoked fails.
            f"AuthInfo=socket={self.socket},cred_expire={CRED_EXPIRE}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd.log'}",
            *shared_settings(self.jobcomp),
            f"MpiDefault={'pmix' if _has_pmix() else 'none'}",
            "PreemptType=preempt/partition_prio",
            "PreemptMode=CANCEL",
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmdTimeout=300",
            "MessageTimeout=20",
            f"NodeName={self.node} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 "
            f"Port={slurmd_port} CPUs={max(cpus, MIN_CPUS)} RealMemory={mem} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP "
            "PriorityTier=1",
            f"PartitionName={URGENT_PARTITION} Nodes={self.node} MaxTime=INFINITE State=UP "
            "PriorityTier=10 PreemptMode=OFF",
        ]
        return "\n".join(lines) + "\n"

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 60) -> "TestSlurm":
        for d in ("etc", "state", "spool"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munged (the munge user) must reach its socket dir
        self._start_munged()
        self.conf.write_text(self.slurm_conf(_free_port(), _free_port()))
        env = {**os.environ, **self.env()}
        subprocess.run([_sbin("slurmctld"), "-f", str(self.conf)], env=env, check=True, timeout=30)
        subprocess.run([_sbin("slurmd"), "-f", str(self.conf), "-N", self.node], env=env,
                       check=True, timeout=30)
        self._wait_idle(timeout)
        return self

    def _start_munged(self) -> None:
        munge = pwd.getpwnam("munge")
        self.munge_dir.mkdir(exist_ok=True)
        self.munge_dir.chmod(0o755)  # clients need to reach the socket
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(128))
        for p in (self.munge_dir, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        d = self.munge_dir
        argv = [_sbin("munged"), f"--socket={self.socket}", f"--key-file={key}",
                f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                f"--seed-file={d / 'munged.seed'}"]
        if os.getuid() == 0:
            argv = ["setpriv", f"--reuid={munge.pw_uid}", f"--regid={munge.pw_gid}",
                    "--clear-groups", *argv]
        subprocess.run(argv, check=True, timeout=30)

    def _wait_idle(self, timeout: float) -> None:
        env = {**os.environ, **self.env()}
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True,
                               text=True, timeout=20)
            out = r.stdout.strip() + r.stderr.strip()
            if r.returncode == 0 and out.startswith("idle"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"test Slurm did not become idle in {timeout:.0f}s (sinfo: {out!r}); "
                           f"see {self.root}/slurmctld.log and slurmd.log")

    def stop(self) -> None:
        # slurmd first (it kills the job steps it runs), then the controller, then munged.
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            self._kill(self.root / pidfile)

    @staticmethod
    def _kill(pidfile: Path, timeout: float = 15) -> None:
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def stop_controller(self) -> None:
        """Stop slurmctld (jobs go on running; clients get no answer until it is back)."""
        self._kill(self.root / "slurmctld.pid")

    def start_controller(self, timeout: float = 60) -> None:
        """Start slurmctld again; it reloads the jobs from its StateSaveLocation."""
        env = {**os.environ, **self.env()}
        subprocess.run([_sbin("slurmctld"), "-f", str(self.conf)], env=env, check=True, timeout=30)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("sinfo", "-h", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"slurmctld does not answer {timeout:.0f}s after its start")

    # -- helpers for tests ---------------------------------------------------
    def run(self, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env={**os.environ, **self.env()}, capture_output=True,
                              text=True, timeout=timeout, check=check)

    def job_field(self, job_id: str, field: str) -> str:
        out = self.run("scontrol", "-o", "show", "job", job_id).stdout
        m = re.search(rf"\b{field}=(\S*)", out)
        return m.group(1) if m else ""

    def release_requeued(self, job_id: str, timeout: float = 60) -> None:
        """Start a requeued job as soon as Slurm allows (its BeginTime is pushed out).

        Waits out cred_expire first: slurmd refuses to launch the job again while the
        previous run's credential is still revoked ("Job credential revoked").
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_field(job_id, "JobState")
            if state == "PENDING" and int(self.job_field(job_id, "Restarts") or 0) > 0:
                time.sleep(CRED_EXPIRE + 1)
                self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
                return
            if state in ("RUNNING", "COMPLETED"):
                return
            time.sleep(0.3)
        raise TimeoutError(f"job {job_id} was not requeued within {timeout}s")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: cluster.py start|stop STATE_DIR", file=sys.stderr)
        return 2
    cluster = TestSlurm(Path(argv[1]))
    if argv[0] == "start":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
