"""Canaries of the multi-node test cluster: real Slurm, MPI, Gloo, Horovod and ssh across nodes."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

PY = sys.executable
NODES = ["n1", "n2", "n3"]
ENV = {"OMP_NUM_THREADS": "1"}

# One rank: an allreduce of rank+1 (sum 6 on 3 ranks), then one line with where it ran.
HOROVOD = """
import os, socket, torch
import horovod.torch as hvd
hvd.init()
total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum).item()
os.write(1, (f"rank={hvd.rank()} size={hvd.size()} host={socket.gethostname()} sum={total:g} "
             f"ompi_rank={os.environ.get('OMPI_COMM_WORLD_RANK', '-')};\\n").encode())
"""

GLOO = """
import os, socket, sys, torch
import torch.distributed as dist
if "RANK" in os.environ:  # torchrun
    dist.init_process_group("gloo")
else:  # srun
    dist.init_process_group("gloo", init_method=f"tcp://n1:{sys.argv[1]}",
                            rank=int(os.environ["SLURM_PROCID"]), world_size=int(os.environ["SLURM_NTASKS"]))
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
os.write(1, f"rank={dist.get_rank()} size={dist.get_world_size()} host={socket.gethostname()} sum={t.item():g};\\n"
         .encode())
dist.destroy_process_group()
"""


# One record per rank, ended by ';'. The launcher forwards each rank's output on its own and
# may interleave records from different ranks on one line (seen: mpirun put rank 1's record
# between rank 0's and its newline), so records are found in the whole text, not per line.
RECORD = re.compile(r"\brank=(\d+) ([^;\n]*);")


def _ranks(text: str) -> dict[int, dict[str, str]]:
    """rank -> fields of the 'rank=R size=... host=... sum=...;' records in ``text``."""
    out = {}
    for m in RECORD.finditer(text):
        fields = dict(f.split("=", 1) for f in m.group(2).split() if "=" in f)
        out[int(m.group(1))] = {"rank": m.group(1), **fields}
    return out


def _assert_allreduce(text: str, size: int = 3) -> None:
    ranks = _ranks(text)
    assert sorted(ranks) == list(range(size)), text
    assert {r["host"] for r in ranks.values()} == set(NODES[:size]), text
    assert all(r["sum"] == str(size * (size + 1) // 2) for r in ranks.values()), text


def test_srun_hostname(virtual_cluster, vc_env):
    """The canary; run as larsctl runs Slurm clients: plainly, in the test process's environment."""
    r = subprocess.run(["srun", "-N3", "hostname"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == NODES
    assert vc_env["SLURM_CONF"] == str(virtual_cluster.conf)
    assert vc_env["OMPI_MCA_btl_tcp_if_include"] == str(virtual_cluster.subnet)
    assert vc_env["OMPI_MCA_oob_tcp_if_include"] == str(virtual_cluster.subnet)
    assert vc_env["GLOO_SOCKET_IFNAME"] == "eth0"


def test_two_by_two_layout_beside_a_second_job(virtual_cluster):
    c = virtual_cluster
    first = c.popen(None, ["srun", "-N2", "--ntasks-per-node=2", "sh", "-c", "hostname; sleep 4"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: "R" in c.client("squeue", "-h", "-o", "%t").stdout.split(), 30,
                  "the 2x2 job to run")
        second = c.client("srun", "-N1", "-n1", "hostname", timeout=30)  # fits while the first runs
        assert second.stdout.strip() in NODES
        assert first.poll() is None, "the second job waited for the first"
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    hosts = out.split()
    assert len(hosts) == 4 and len(set(hosts)) == 2 and all(hosts.count(h) == 2 for h in hosts), out


def test_sbatch_mpirun_horovod_allreduce(virtual_cluster, tmp_path):
    """Open MPI's mpirun in a batch job starts its daemons through srun, ranks on 3 hosts."""
    job = tmp_path / "job"  # under pytest's base temp: the same path on every node
    job.mkdir()
    (job / "rank.py").write_text(HOROVOD)
    (job / "job.sh").write_text(f"#!/bin/bash\nset -e\nhostname > {job}/batch-host\n"
                                f"mpirun -np 3 --map-by node {PY} {job}/rank.py\n")
    # plm=slurm: the MPI daemons must start through srun (no fallback to ssh).
    c = virtual_cluster
    job_id = c.client("sbatch", "-N3", "--ntasks-per-node=1", "--parsable", f"--chdir={job}",
                      f"--output={job}/slurm-%j.out", str(job / "job.sh"),
                      env={**ENV, "OMPI_MCA_plm": "slurm"}).stdout.strip()
    # (sbatch --wait polls every few seconds; this is quicker)
    _wait_for(lambda: _field(c, job_id, "JobState") not in ("PENDING", "RUNNING", "CONFIGURING",
                                                            "COMPLETING"), 180, f"job {job_id}")
    out = (job / f"slurm-{job_id}.out").read_text()
    assert _field(c, job_id, "JobState") == "COMPLETED", out
    assert (job / "batch-host").read_text().strip() == "n1"
    _assert_allreduce(out)
    assert sorted(v["ompi_rank"] for v in _ranks(out).values()) == ["0", "1", "2"]


def test_srun_pmix_horovod_allreduce(virtual_cluster, tmp_path):
    (tmp_path / "rank.py").write_text(HOROVOD)
    r = virtual_cluster.client("srun", "-N3", "--ntasks-per-node=1", "--mpi=pmix", PY,
                               str(tmp_path / "rank.py"), env=ENV, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_allreduce(r.stdout)


def test_srun_torch_gloo_allreduce(virtual_cluster, tmp_path):
    (tmp_path / "rank.py").write_text(GLOO)
    r = virtual_cluster.client("srun", "-N3", "--ntasks-per-node=1", PY, str(tmp_path / "rank.py"),
                               "29511", env=ENV, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_allreduce(r.stdout)


def test_torchrun_c10d_rendezvous_on_first_node(virtual_cluster, tmp_path):
    (tmp_path / "rank.py").write_text(GLOO)
    r = virtual_cluster.client(
        "srun", "-N3", "--ntasks-per-node=1", PY, "-m", "torch.distributed.run", "--nnodes=3",
        "--nproc-per-node=1", "--rdzv-backend=c10d", "--rdzv-endpoint=n1:29512", "--rdzv-id=vc-canary",
        str(tmp_path / "rank.py"), env=ENV, timeout=180, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_allreduce(r.stdout)


def test_horovodrun_gloo_over_ssh_from_n1(virtual_cluster, tmp_path):
    c = virtual_cluster
    assert c.run("n1", "ssh", "n2", "hostname", timeout=60).stdout.strip() == "n2"
    (tmp_path / "rank.py").write_text(HOROVOD)
    # --disable-cache: the ssh check runs every time (the nodes' ~/.horovod is a fresh tmpfs too).
    r = c.run("n1", PY, "-m", "horovod.runner.launch", "--gloo", "--disable-cache", "-np", "3",
              "-H", "n1:1,n2:1,n3:1", PY, str(tmp_path / "rank.py"), env=ENV, timeout=180,
              check=False, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_allreduce(r.stdout)
    # The remote ranks came in over ssh with the cluster's key.
    for node in ("n2", "n3"):
        assert "Accepted publickey for root" in (c.dir(node) / "sshd.log").read_text()


def test_signal_requeue_and_jobcomp(vc, virtual_cluster, tmp_path):
    """USR2 to the batch shell, `scontrol requeue` from inside the job, then `sacct -c`."""
    c = virtual_cluster
    job = tmp_path / "job"
    job.mkdir()
    (job / "job.sh").write_text(f"""#!/bin/bash
run=${{SLURM_RESTART_COUNT:-0}}
if [ "$run" -gt 0 ]; then echo "done on $(hostname)" > {job}/done; exit 0; fi
trap 'scontrol requeue "$SLURM_JOB_ID"; echo requeued > {job}/requeued; exit 75' USR2
touch {job}/armed
sleep 120 & wait
""")
    job_id = c.client("sbatch", "--parsable", "-N1", "--requeue", "--signal=B:USR2@30", "-t", "5",
                      f"--output={job}/slurm-%j.out", str(job / "job.sh"), env=ENV).stdout.strip()
    _wait_for(lambda: (job / "armed").exists(), 60, f"job {job_id} to start")
    assert c.client("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() == "RUNNING"
    c.client("scancel", "--batch", "--signal=USR2", job_id)
    _wait_for(lambda: (job / "requeued").exists(), 60, "the job to requeue itself")
    # A requeued job may start again once its old credential expired (cred_expire).
    _wait_for(lambda: _field(c, job_id, "Restarts") not in ("", "0")
              and _field(c, job_id, "JobState") == "PENDING", 60, "the requeue")
    time.sleep(vc.CRED_EXPIRE + 1)
    c.client("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
    _wait_for(lambda: (job / "done").exists(), 90, f"job {job_id} to run again")
    assert (job / "done").read_text().startswith("done on n")
    _wait_for(lambda: _field(c, job_id, "JobState") == "COMPLETED", 60, "COMPLETED")
    sacct = c.client("sacct", "-c", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode").stdout
    states = [line.split("|")[1] for line in sacct.splitlines() if line.strip()]
    # jobcomp/filetxt records both runs: the requeued one (as PENDING), then the completed one.
    assert len(states) == 2 and states[-1] == "COMPLETED" and states[0] != "COMPLETED", sacct


def _field(cluster, job_id: str, field: str) -> str:
    out = cluster.client("scontrol", "-o", "show", "job", job_id, check=False).stdout
    for item in out.split():
        if item.startswith(field + "="):
            return item.split("=", 1)[1]
    return ""


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_outside_unreachable_and_no_default_route(virtual_cluster):
    c = virtual_cluster
    c.check_isolated("n1")
    c.check_isolated("n3")
    with pytest.raises(RuntimeError, match="reaches outside"):  # the check does see a reachable host
        c.check_isolated("n1", also=(c.ip("n2"),))
    r = c.run("n1", "ip", "-4", "route", "get", "1.1.1.1", check=False, cluster_env=False)
    assert r.returncode != 0 and "unreachable" in r.stderr.lower(), r.stdout + r.stderr
    addrs = c.run("n2", "ip", "-o", "addr", "show", cluster_env=False).stdout
    assert "eth0" in addrs and c.ip("n2") in addrs and "inet6" not in addrs, addrs


def test_node_processes_invisible_across_nodes(virtual_cluster):
    c = virtual_cluster
    marker = f"424242.{os.getpid()}"  # sleep's argument: unique to this test
    p = c.popen("n2", ["sleep", marker], stdout=subprocess.DEVNULL, cluster_env=False)
    try:
        _wait_for(lambda: c.run("n2", "pgrep", "-f", f"sleep {marker}", check=False,
                                cluster_env=False).returncode == 0, 20, "the sleep on n2")
        for node in ("n1", "n3"):
            seen = c.run(node, "pgrep", "-f", f"sleep {marker}", check=False, cluster_env=False)
            assert seen.returncode == 1, f"{node} sees n2's sleep: {seen.stdout}"
            # a pkill there finds nothing either, and the sleep lives on
            assert c.run(node, "pkill", "-f", f"sleep {marker}", check=False,
                         cluster_env=False).returncode == 1
        assert p.poll() is None
        assert c.run("n2", "pgrep", "-f", f"sleep {marker}", check=False,
                     cluster_env=False).returncode == 0
        # Each node is its own PID namespace: PID 1 is the node's init.
        assert "_init" in c.run("n1", "cat", "/proc/1/cmdline", cluster_env=False).stdout
    finally:
        c.run("n2", "pkill", "-f", f"sleep {marker}", check=False, cluster_env=False)
        p.wait(timeout=20)


def test_private_tmp_shared_job_dirs(virtual_cluster, tmp_path):
    c = virtual_cluster
    c.run("n1", "sh", "-c", "echo n1 > /tmp/vc-private", cluster_env=False)
    assert c.run("n2", "test", "-e", "/tmp/vc-private", check=False, cluster_env=False).returncode == 1
    assert not Path("/tmp/vc-private").exists()
    c.run("n3", "sh", "-c", f"hostname > {tmp_path}/from-n3", cluster_env=False)
    assert (tmp_path / "from-n3").read_text().strip() == "n3"
    assert os.environ["LARSCTL_HOME"].startswith(str(tmp_path))
    assert c.run("n2", "test", "-d", os.environ["LARSCTL_HOME"], check=False,
                 cluster_env=False).returncode == 0


def test_single_node_test_slurm_side_by_side(virtual_cluster, slurm_cluster):
    """Both Slurms answer at once, each through its own munged."""
    single = slurm_cluster.run("srun", "-N1", "hostname", timeout=60).stdout.strip()
    assert single and single not in NODES
    assert sorted(virtual_cluster.client("srun", "-N3", "hostname").stdout.split()) == NODES


def test_cli_start_stop_leaves_nothing_behind(vc, virtual_cluster):
    """A second cluster (beside the session's) by the CLI; after stop nothing of it remains."""
    root = Path(tempfile.mkdtemp(prefix="larsctl-vc-cli-"))
    cli = [PY, str(Path(vc.__file__))]
    try:
        start = subprocess.run([*cli, "start", str(root), "--nodes", "2"], capture_output=True,
                               text=True, timeout=120)
        assert start.returncode == 0, start.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in start.stdout.splitlines())
        assert exports["SLURM_CONF"] == str(root / "etc" / "slurm.conf")
        second = vc.VirtualCluster.load(root)
        assert second.subnet != virtual_cluster.subnet and second.bridge != virtual_cluster.bridge
        status = json.loads(subprocess.run([*cli, "status", str(root)], capture_output=True,
                                           text=True, timeout=60, check=True).stdout)
        assert sorted(status["sinfo"]) == ["n1 idle 4", "n2 idle 4"]
        assert sorted(second.client("srun", "-N2", "hostname").stdout.split()) == ["n1", "n2"]
        inits = {n: v["init_pid"] for n, v in second.inits.items()}
        assert second.leftovers()  # it is running: the check sees it
    finally:
        stop = subprocess.run([*cli, "stop", str(root)], capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert second.leftovers() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert second.bridge not in links
    for pid in inits.values():
        assert not Path(f"/proc/{pid}").exists() or "_init" not in Path(f"/proc/{pid}/cmdline").read_text()
    for d in os.listdir("/proc"):
        if d.isdigit():
            cmd = vc._cmdline(d)
            assert not (str(root) in cmd and any(x in cmd for x in ("slurmd", "slurmctld", "munged", "sshd"))), cmd
    # The session's cluster is untouched.
    assert sorted(virtual_cluster.client("srun", "-N3", "hostname").stdout.split()) == NODES
    shutil.rmtree(root, ignore_errors=True)
