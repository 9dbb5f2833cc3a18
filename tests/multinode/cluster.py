"""A real multi-node Slurm on one machine: one Linux namespace set per node.

Each node (n1, n2, ...) and the controller (``ctl``) is a process tree in its own
network, UTS (host name), mount, PID and IPC namespaces:

* network: a veth named ``eth0`` on a private /24 bridge (no default route, no NAT,
  no uplink, IPv6 off); the bridge's ``.1`` address is the machine itself (the
  "login" node), so Slurm clients in the root namespaces reach the cluster;
* mount: private tmpfs on ``/tmp``, ``/dev/shm`` and ``/run`` (so ``/run/munge``,
  ``/run/slurm``, ``/run/sshd`` are private), the cluster's hosts file bound over
  ``/etc/hosts``, its ssh client config over ``/etc/ssh/ssh_config``, a fresh
  tmpfs over ``~/.horovod`` (horovodrun's ssh-check cache) and, where the
  machine has one, an empty directory over ``~/.ssh``;
* PID: a tiny init (this file's ``_init`` command) is PID 1 and reaps orphans;
  killing it makes the kernel kill everything else in the node.

Every namespace runs its own munged (same key; one munged shared by several nodes
makes multi-node steps fail with "Invalid job credential"), the controller runs
slurmctld, every node slurmd and sshd (root logins with the cluster's own key).
The Slurm clients of the root namespaces get a munged of their own too (in a PID
namespace of its own, "login", so that it goes with the cluster).  All of them
use the socket path of slurm.conf ``AuthInfo``: ``STATE/munge/munge.socket`` is
the clients' munged in the root mount namespace, and inside a node the node's
private ``/run/munge`` is bound over ``STATE/munge``.

Lifetime: every namespace's init is the child of an ``unshare --kill-child``; by
default (``persistent=False``) that unshare dies with the process that started
the cluster, so even a SIGKILLed pytest leaves no process behind (only the bridge,
which the next start removes: :func:`reap_stale_clusters`).  The CLI starts
persistent clusters, stopped by ``cluster.py stop DIR``.

Shared file system rule: a node sees the machine's files at the same paths,
except below ``/tmp``, ``/dev/shm`` and ``/run``, which are private per node.
Paths below those that must be shared (the state directory, pytest's base temp
directory holding the tests' LARSCTL_HOME and job directories, the repository if
it lives there) are bind-mounted into every node at the same path: pass them as
``shared=[...]`` (they must exist before :meth:`VirtualCluster.start`; what is
created inside them later is visible everywhere).

By hand (as root):
    .venv/bin/python tests/multinode/cluster.py start /var/tmp/vc --nodes 3   # prints exports
    .venv/bin/python tests/multinode/cluster.py status /var/tmp/vc
    .venv/bin/python tests/multinode/cluster.py exec /var/tmp/vc n1 -- hostname
    .venv/bin/python tests/multinode/cluster.py kill-node /var/tmp/vc n2     # a power loss
    .venv/bin/python tests/multinode/cluster.py start-node /var/tmp/vc n2
    .venv/bin/python tests/multinode/cluster.py stop-controller /var/tmp/vc  # then start-controller
    .venv/bin/python tests/multinode/cluster.py stop /var/tmp/vc
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _single_node_cluster():
    """tests/slurm/cluster.py (test directories are not packages: loaded by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "larsctl_test_slurm_cluster_settings", Path(__file__).resolve().parent.parent / "slurm" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

REPO = Path(__file__).resolve().parents[2]
IFACE = "eth0"  # the node interface, the same name on every node
CONTROLLER = "ctl"
# The machine itself on the cluster network (the bridge's .1).  Its munged (for the Slurm
# clients of the root namespaces) runs in a PID namespace of its own, so that stopping
# the cluster, or the death of the process that started it, takes it along.
LOGIN = "login"
PARTITION = "debug"
CRED_EXPIRE = 5  # seconds; also how long a requeued job waits before it may start again
MASKED = ("/tmp", "/dev/shm", "/run")  # private per node
LINK_PREFIX = "lvc"  # host-side link names: lvcXXXXXX (bridge), lvcXXXXXX-n1 (veths)
# Tool -> Debian package (.ci/setup.sh installs them for `make test`).
TOOLS = {"ip": "iproute2", "unshare": "util-linux", "nsenter": "util-linux", "setpriv": "util-linux",
         "munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sinfo": "slurm-client",
         "srun": "slurm-client", "sbatch": "slurm-client", "sshd": "openssh-server",
         "ssh": "openssh-client", "ssh-keygen": "openssh-client", "mpirun": "openmpi-bin"}
DEBIAN_PACKAGES = tuple(sorted(set(TOOLS.values())))
# Outside addresses that must be unreachable from a node (plus the machine's own).
OUTSIDE = ("1.1.1.1", "8.8.8.8", "2606:4700:4700::1111")


# -- small helpers ---------------------------------------------------------------
def _which(name: str) -> str | None:
    for d in ("", "/usr/sbin", "/sbin", "/usr/bin"):
        p = shutil.which(name) if not d else str(Path(d, name))
        if p and os.access(p, os.X_OK):
            return p
    return None


def _tool(name: str) -> str:
    p = _which(name)
    if p is None:
        raise FileNotFoundError(f"{name} not found")
    return p


def missing_tools() -> list[str]:
    return [t for t in TOOLS if _which(t) is None]


def unavailable_reason() -> str | None:
    """Why a virtual cluster cannot start here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network, mount and PID namespaces, munged, slurmd)"
    missing = missing_tools()
    if missing:
        pkgs = sorted({TOOLS[t] for t in missing})
        return f"missing {' '.join(missing)} (Debian packages: {' '.join(pkgs)})"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (Debian package munge)"
    r = subprocess.run([_tool("unshare"), "--net", "--uts", "--mount", "--pid", "--ipc", "--fork",
                        "--mount-proc", "true"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"cannot create namespaces: {r.stderr.strip() or r.returncode}"
    return None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _ns_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def _ip_json(*args: str) -> list:
    r = subprocess.run([_tool("ip"), "-j", *args], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout or "[]") if r.returncode == 0 else []


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 route (all tables) and address of the machine."""
    nets = []
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst in ("default", ""):
            continue
        try:
            nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
        except ValueError:
            continue
    for link in _ip_json("-4", "addr"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{a['local']}/{a.get('prefixlen', 32)}", strict=False))
    return [n for n in nets if n.version == 4]


def _candidate_subnets():
    for third in range(0, 256):
        yield ipaddress.ip_network(f"10.254.{third}.0/24")
    for third in range(0, 256):
        yield ipaddress.ip_network(f"172.31.{third}.0/24")
    for third in range(128, 256):
        yield ipaddress.ip_network(f"192.168.{third}.0/24")


def _bridge_name(subnet: ipaddress.IPv4Network) -> str:
    a, b, c, _ = subnet.network_address.packed
    return f"{LINK_PREFIX}{a:02x}{b:02x}{c:02x}"


def _disable_ipv6(ifname: str) -> None:
    p = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if p.exists():
        p.write_text("1")


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the thread that started it ends."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def reap_stale_clusters() -> list[str]:
    """Remove what is left of clusters whose owner died without stopping them (their bridge).

    A bridge names its cluster in its alias.  A cluster still starting (its owner
    lives) or running is left alone.
    """
    reaped = []
    for link in _ip_json("-d", "link", "show", "type", "bridge"):
        name, alias = link.get("ifname", ""), link.get("ifalias", "")
        if not name.startswith(LINK_PREFIX) or not alias.startswith("larsctl-vc /"):
            continue
        root = Path(alias.split(" ", 1)[1])
        try:
            state = json.loads((root / "cluster.json").read_text())
        except (OSError, ValueError):
            state = {}
        owner = state.get("owner_pid")
        if owner and _pid_alive(owner):  # starting, or owned by a live process
            continue
        if state:
            c = VirtualCluster.load(root)
            if c.alive():
                continue
            c.stop()
        else:
            subprocess.run([_tool("ip"), "link", "del", name], capture_output=True, timeout=30)
        reaped.append(name)
    return reaped


def _meminfo_mb() -> int:
    m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return int(m.group(1)) // 1024 if m else 4096


class VirtualCluster:
    """A Slurm cluster of ``nodes`` namespace nodes plus a controller, state under ``root``.

    ``shared``: directories under /tmp, /dev/shm or /run to bind into every node at the
    same path (``root`` and the repository are always shared).  ``cpus_per_node``: what
    slurm.conf declares (config_overrides), not what the machine has.
    """

    __test__ = False

    def __init__(self, root: Path | str, nodes: int = 3, cpus_per_node: int = 4,
                 shared: list[Path | str] | tuple = (), persistent: bool = False):
        if not 1 <= nodes <= 200:
            raise ValueError("nodes must be 1..200")
        self.root = Path(root).resolve()
        self.nodes = [f"n{i}" for i in range(1, nodes + 1)]
        self.cpus_per_node = cpus_per_node
        self.shared = [Path(p).resolve() for p in shared]
        # persistent=False: the cluster dies with the process that started it (even on SIGKILL).
        self.persistent = persistent
        self.conf = self.root / "etc" / "slurm.conf"
        self.hosts_file = self.root / "etc" / "hosts"
        self.munge_key = self.root / "etc" / "munge.key"
        self.munge_dir = self.root / "munge"  # clients' munged; a node's /run/munge inside nodes
        self.socket = self.munge_dir / "munge.socket"
        self.ssh_dir = self.root / "ssh"
        self.jobcomp = self.root / "jobcomp.txt"
        self.state_file = self.root / "cluster.json"
        self.subnet: ipaddress.IPv4Network | None = None
        self.bridge: str | None = None
        self.inits: dict[str, dict] = {}  # namespace name -> pids and namespace inodes
        self._procs: list[subprocess.Popen] = []

    # -- addressing ----------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Every namespace: the controller first, then the nodes."""
        return [CONTROLLER, *self.nodes]

    def ip(self, name: str) -> str:
        """The address of ``name`` (``ctl``, ``n1``..., or ``login`` for the machine)."""
        assert self.subnet is not None, "cluster not started"
        base = self.subnet.network_address
        if name == LOGIN:
            return str(base + 1)
        if name == CONTROLLER:
            return str(base + 10)
        return str(base + 10 + int(name[1:]))

    def veth(self, name: str) -> str:
        return f"{self.bridge}-{'c' if name == CONTROLLER else name}"

    def dir(self, name: str) -> Path:
        """The state directory of one namespace (logs, spool)."""
        if name == LOGIN:
            return self.munge_dir
        return self.root / (CONTROLLER if name == CONTROLLER else f"nodes/{name}")

    # -- what clients export -----------------------------------------------------
    def network_env(self) -> dict[str, str]:
        """Settings that make MPI, Gloo and Horovod use the cluster network."""
        assert self.subnet is not None, "cluster not started"
        return {
            "OMPI_MCA_btl_tcp_if_include": str(self.subnet),
            "OMPI_MCA_oob_tcp_if_include": str(self.subnet),
            "GLOO_SOCKET_IFNAME": IFACE,
            "TP_SOCKET_IFNAME": IFACE,
            "NCCL_SOCKET_IFNAME": IFACE,
            "HOROVOD_GLOO_IFACE": IFACE,
        }

    def env(self) -> dict[str, str]:
        """What a client (sbatch, srun, larsctl) exports to use the cluster."""
        env = {"SLURM_CONF": str(self.conf), **self.network_env()}
        if os.geteuid() == 0:  # every job of this cluster runs as root
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        return env

    # -- running things ----------------------------------------------------------
    def node_argv(self, name: str, argv: list[str] | tuple, cwd: str | Path | None = None) -> list[str]:
        """``argv`` prefixed so that it runs inside node ``name`` (all its namespaces).

        The working directory is ``cwd`` or, where visible in the node, the current one.
        """
        pid = self.inits[name]["init_pid"]
        if name == LOGIN:
            return [_tool("nsenter"), f"--target={pid}", "--pid", "--", *map(str, argv)]
        wd = Path(cwd) if cwd is not None else Path.cwd()
        if cwd is None and any(str(wd).startswith(m + "/") or str(wd) == m for m in MASKED) \
                and not any(wd == s or s in wd.parents for s in self._all_shared()):
            wd = Path("/")
        return [_tool("nsenter"), f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid",
                f"--wd={wd}", "--", *map(str, argv)]

    def _env(self, env: dict | None, cluster_env: bool) -> dict[str, str]:
        out = dict(os.environ)
        if cluster_env:
            out.update(self.env())
        out.update(env or {})
        return out

    def popen(self, name: str | None, argv: list[str] | tuple, env: dict | None = None,
              cwd: str | Path | None = None, cluster_env: bool = True, **kw) -> subprocess.Popen:
        """Start ``argv`` on node ``name`` (None: in the root namespaces, as a client)."""
        full = list(map(str, argv)) if name is None else self.node_argv(name, argv, cwd)
        return subprocess.Popen(full, env=self._env(env, cluster_env),
                                cwd=cwd if name is None else None, **kw)

    def run(self, name: str | None, *argv, timeout: float = 60, check: bool = True,
            env: dict | None = None, cwd: str | Path | None = None, input: str | None = None,
            cluster_env: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` on node ``name`` (None: in the root namespaces) with the cluster env."""
        full = list(map(str, argv)) if name is None else self.node_argv(name, argv, cwd)
        return subprocess.run(full, env=self._env(env, cluster_env), cwd=cwd if name is None else None,
                              capture_output=True, text=True, timeout=timeout, check=check,
                              input=input)

    def client(self, *argv, **kw) -> subprocess.CompletedProcess:
        """A Slurm client command in the root namespaces (like larsctl runs them)."""
        return self.run(None, *argv, **kw)

    # -- configuration -----------------------------------------------------------
    def _all_shared(self) -> list[Path]:
        paths = [self.root, REPO, Path(sys.prefix).resolve(), *self.shared]
        out: list[Path] = []
        for p in sorted(set(paths), key=lambda p: len(p.parts)):
            masked = any(str(p) == m or str(p).startswith(m + "/") for m in MASKED)
            if masked and not any(q == p or q in p.parents for q in out):
                out.append(p)
        return out

    def hosts_text(self) -> str:
        lines = ["127.0.0.1\tlocalhost",
                 f"{self.ip('login')}\tlogin {socket.gethostname().split('.')[0]}",
                 f"{self.ip(CONTROLLER)}\t{CONTROLLER}"]
        lines += [f"{self.ip(n)}\t{n}" for n in self.nodes]
        return "\n".join(lines) + "\n"

    def slurm_conf(self) -> str:
        r = self.root
        mem = max(1024, _meminfo_mb() // max(1, len(self.nodes)))
        lines = [
            "ClusterName=larsctl-vc",
            f"SlurmctldHost={CONTROLLER}({self.ip(CONTROLLER)})",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket},cred_expire={CRED_EXPIRE}",
            f"StateSaveLocation={r / CONTROLLER / 'state'}",
            f"SlurmctldPidFile={r / CONTROLLER / 'slurmctld.pid'}",
            f"SlurmctldLogFile={r / CONTROLLER / 'slurmctld.log'}",
            # On the node's own /run (a tmpfs): gone with the node, as a rebooted node's runtime
            # state is.  A spool kept across the node's death keeps the stale PMIx socket of the
            # step that died, and a requeued job (same job and step ids) cannot bind it again.
            "SlurmdSpoolDir=/run/slurm/spool",
            f"SlurmdPidFile={r / 'nodes' / '%n' / 'slurmd.pid'}",
            f"SlurmdLogFile={r / 'nodes' / '%n' / 'slurmd.log'}",
            *_single_node_cluster().shared_settings(self.jobcomp),
            "MpiDefault=none",
            "KillWait=5",
            "InactiveLimit=0",
            # A dead node is noticed by its missed pings (every SlurmdTimeout/3), DOWN after 60 s.
            "SlurmdTimeout=60",
            "MessageTimeout=30",
            "TCPTimeout=10",
        ]
        for n in self.nodes:
            lines.append(f"NodeName={n} NodeHostname={n} NodeAddr={self.ip(n)} "
                         f"CPUs={self.cpus_per_node} RealMemory={mem} State=UNKNOWN")
        lines.append(f"PartitionName={PARTITION} Nodes={','.join(self.nodes)} Default=YES "
                     "MaxTime=INFINITE State=UP")
        return "\n".join(lines) + "\n"

    def _write_files(self) -> None:
        munge = pwd.getpwnam("munge")
        for d in ("etc", f"{CONTROLLER}/state", "ssh"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for name in self.names:
            d = self.dir(name)
            (d / "spool").mkdir(parents=True, exist_ok=True)
            os.chown(d, munge.pw_uid, munge.pw_gid)  # munged (the munge user) writes its log here
            d.chmod(0o755)
        self.munge_dir.mkdir(exist_ok=True)
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        self.munge_dir.chmod(0o755)
        _write(self.hosts_file, self.hosts_text())
        _write(self.conf, self.slurm_conf())
        self.munge_key.write_bytes(os.urandom(1024))
        os.chown(self.munge_key, munge.pw_uid, munge.pw_gid)
        self.munge_key.chmod(0o400)
        # ssh: one client key (root of every node may log into every node) and one host key.
        s = self.ssh_dir
        s.chmod(0o700)
        for key in ("id_ed25519", "ssh_host_ed25519_key"):
            if not (s / key).exists():
                subprocess.run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                                f"larsctl-vc-{key}", "-f", str(s / key)], check=True, timeout=30)
        _write(s / "authorized_keys", (s / "id_ed25519.pub").read_text(), 0o600)
        _write(s / "sshd_config", "\n".join([
            "Port 22",
            f"HostKey {s / 'ssh_host_ed25519_key'}",
            "PidFile /run/sshd.pid",
            f"AuthorizedKeysFile {s / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel INFO",
        ]) + "\n")
        # Bound over /etc/ssh/ssh_config in the nodes (the machine's stays as it is).
        _write(s / "ssh_config", "\n".join([
            "Host *",
            "    User root",
            f"    IdentityFile {s / 'id_ed25519'}",
            "    IdentitiesOnly yes",
            "    StrictHostKeyChecking no",
            "    UserKnownHostsFile /dev/null",
            "    GlobalKnownHostsFile /dev/null",
            "    BatchMode yes",
            "    LogLevel ERROR",
            "    ConnectTimeout 20",
        ]) + "\n")
        (s / "empty-dot-ssh").mkdir(mode=0o700, exist_ok=True)

    def _save(self) -> None:
        state = {"root": str(self.root), "nodes": self.nodes, "cpus_per_node": self.cpus_per_node,
                 "persistent": self.persistent, "owner_pid": os.getpid(),
                 "shared": [str(p) for p in self.shared], "subnet": str(self.subnet),
                 "bridge": self.bridge, "inits": self.inits}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, root: Path | str) -> "VirtualCluster":
        """The cluster whose state is in ``root`` (started by this or another process)."""
        root = Path(root).resolve()
        state = json.loads((root / "cluster.json").read_text())
        c = cls(root, nodes=len(state["nodes"]), cpus_per_node=state["cpus_per_node"],
                shared=state["shared"], persistent=state.get("persistent", False))
        c.subnet = ipaddress.ip_network(state["subnet"]) if state.get("subnet") not in (None, "None") else None
        c.bridge = state.get("bridge")
        c.inits = state.get("inits", {})
        return c

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "VirtualCluster":
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"virtual cluster cannot start: {reason}")
        if self.state_file.exists():
            old = VirtualCluster.load(self.root)
            if old.alive():
                raise RuntimeError(f"a virtual cluster already runs from {self.root}; stop it first")
            old.stop()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged (the munge user) must reach the key, logs and socket
        for p in self.shared:
            if not p.is_dir():
                raise FileNotFoundError(f"shared directory {p} does not exist")
        t0 = time.monotonic()
        reap_stale_clusters()
        self.inits = {}
        self._save()  # names the owner before the bridge (the claim) exists: not stale
        try:
            self._claim_subnet()
            self._save()
            self._write_files()
            self._start_namespaces()
            self._save()
            self._wire_network()
            self._start_daemons()
            self._wait_idle(timeout - (time.monotonic() - t0))
        except BaseException:
            self.stop()
            raise
        return self

    def _claim_subnet(self) -> None:
        used = _used_networks()
        ip = _tool("ip")
        for net in _candidate_subnets():
            if any(net.overlaps(u) for u in used):
                continue
            name = _bridge_name(net)
            # Creating the bridge is the claim: a concurrent cluster gets "File exists".
            r = subprocess.run([ip, "link", "add", "name", name, "type", "bridge"],
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                self.subnet, self.bridge = net, name
                _disable_ipv6(name)
                # Names the owner, for reap_stale_clusters() and for people reading `ip -d link`.
                subprocess.run([ip, "link", "set", name, "alias", f"larsctl-vc {self.root}"],
                               check=True, capture_output=True, timeout=30)
                return
        raise RuntimeError("no free private /24 for the virtual cluster")

    def _munged(self, pidfile, logfile, seedfile, origin) -> list[str]:
        munge = pwd.getpwnam("munge")
        argv = [_tool("setpriv"), f"--reuid={munge.pw_uid}", f"--regid={munge.pw_gid}",
                "--clear-groups", _tool("munged"), f"--socket={self.socket}",
                f"--key-file={self.munge_key}", f"--pid-file={pidfile}", f"--log-file={logfile}",
                f"--seed-file={seedfile}", f"--origin={origin}", "--num-threads=4"]
        return argv

    def _init_config(self, name: str) -> dict:
        home = Path(pwd.getpwuid(0).pw_dir)  # ssh's idea of home; Horovod's is $HOME
        masks = {}
        for d in {home / ".horovod", Path(os.path.expanduser("~")) / ".horovod"}:
            d.mkdir(exist_ok=True)  # horovodrun's ssh-check cache: a fresh tmpfs in every node
            masks[str(d)] = "tmpfs"
        if (home / ".ssh").is_dir():
            masks[str(home / ".ssh")] = str(self.ssh_dir / "empty-dot-ssh")
        return {"hostname": name, "shared": [str(p) for p in self._all_shared()],
                "binds": {str(self.hosts_file): "/etc/hosts",
                          str(self.ssh_dir / "ssh_config"): "/etc/ssh/ssh_config",
                          "/run/munge": str(self.munge_dir)},
                "masks": masks, "munge_uid": pwd.getpwnam("munge").pw_uid,
                "munge_gid": pwd.getpwnam("munge").pw_gid}

    def _start_namespaces(self, names: list[str] | None = None) -> None:
        pending = {}
        for name in names if names is not None else [LOGIN, *self.names]:
            r, w = os.pipe()
            log = open(self.dir(name) / "init.log", "wb")
            # --kill-child: when unshare dies, the init dies, and with it the whole PID namespace.
            if name == LOGIN:
                ns = ["--pid", "--kill-child"]
                cfg = {"login": True}
            else:
                ns = ["--net", "--uts", "--mount", "--pid", "--ipc", "--kill-child", "--mount-proc",
                      "--propagation=private"]
                cfg = self._init_config(name)
            argv = [_tool("unshare"), *ns, "--", sys.executable, "-I", "-S",
                    str(Path(__file__).resolve()), "_init", str(w), str(self.root), json.dumps(cfg)]
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 pass_fds=(w,), start_new_session=True,
                                 preexec_fn=None if self.persistent else _die_with_parent)
            log.close()
            os.close(w)
            self._procs.append(p)
            pending[name] = (p, r)
        for name, (p, r) in pending.items():
            with os.fdopen(r, "rb") as f:
                ready = f.readline().strip() if select.select([f], [], [], 60)[0] else b""
            if ready != b"ready":
                raise RuntimeError(f"namespace {name} did not start: "
                                   f"{(self.dir(name) / 'init.log').read_text()[-2000:]}")
            kids = _children(p.pid)
            if len(kids) != 1:
                raise RuntimeError(f"cannot find the init of {name} (children of {p.pid}: {kids})")
            init = kids[0]
            kinds = ("pid",) if name == LOGIN else ("net", "mnt", "pid", "uts", "ipc")
            self.inits[name] = {"unshare_pid": p.pid, "init_pid": init,
                                "ns": {k: _ns_inode(init, k) for k in kinds}}

    def _wire_network(self, names: list[str] | None = None) -> None:
        ip = _tool("ip")
        br = self.bridge
        first = names is None
        names = self.names if names is None else names
        create = [f"link add {self.veth(n)} type veth peer name {IFACE} netns {self.inits[n]['init_pid']}"
                  for n in names]
        subprocess.run([ip, "-batch", "-"], input="\n".join(create) + "\n", text=True, check=True,
                       capture_output=True, timeout=30)
        for n in names:
            _disable_ipv6(self.veth(n))
        up = [f"addr add {self.ip('login')}/{self.subnet.prefixlen} dev {br}", f"link set {br} up"] if first else []
        up += [f"link set {self.veth(n)} master {br} up" for n in names]
        subprocess.run([ip, "-batch", "-"], input="\n".join(up) + "\n", text=True, check=True,
                       capture_output=True, timeout=30)
        procs = []
        for n in names:
            inside = ["link set lo up", f"addr add {self.ip(n)}/{self.subnet.prefixlen} dev {IFACE}",
                      f"link set {IFACE} up"]
            p = subprocess.Popen([_tool("nsenter"), f"--target={self.inits[n]['init_pid']}", "--net",
                                  ip, "-batch", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            procs.append((n, p, "\n".join(inside) + "\n"))
        for n, p, text in procs:
            out, _ = p.communicate(text, timeout=30)
            if p.returncode != 0:
                raise RuntimeError(f"network of {n}: {out}")

    def _daemon_env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": pwd.getpwuid(0).pw_dir, "LANG": "C.UTF-8", "SLURM_CONF": str(self.conf)}

    def _start_daemons(self, names: list[str] | None = None) -> None:
        daemon_env = self._daemon_env()
        procs = []
        for n in names if names is not None else [LOGIN, *self.names]:
            d = self.dir(n)
            if n == LOGIN:  # the clients' munged, in the root mount namespace
                cmds = [self._munged(d / "munged.pid", d / "munged.log", d / "munged.seed",
                                     self.ip(LOGIN))]
            else:  # a node's own munged, on its private /run/munge
                cmds = [self._munged("/run/munge/munged.pid", d / "munged.log",
                                     "/run/munge/munged.seed", self.ip(n))]
            if n == LOGIN:
                pass
            elif n == CONTROLLER:
                cmds.append([_tool("slurmctld")])
            else:
                cmds.append([_tool("slurmd"), "-N", n])
                cmds.append([_tool("sshd"), "-f", str(self.ssh_dir / "sshd_config"), "-E",
                             str(d / "sshd.log")])
            script = " && ".join(shlex.join(map(str, c)) for c in cmds)
            log = open(d / "start.log", "wb")
            p = subprocess.Popen(self.node_argv(n, ["/bin/sh", "-c", script], cwd="/"), env=daemon_env,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            procs.append((n, p))
        for n, p in procs:
            if p.wait(timeout=60) != 0:
                raise RuntimeError(f"daemons of {n} did not start: "
                                   f"{(self.dir(n) / 'start.log').read_text()[-2000:]}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 5)
        out = ""
        while time.monotonic() < deadline:
            r = self.client("sinfo", "-h", "-N", "-o", "%N %T", check=False, timeout=30)
            out = (r.stdout + r.stderr).strip()
            states = dict(line.split() for line in r.stdout.splitlines() if len(line.split()) == 2)
            if r.returncode == 0 and all(states.get(n) == "idle" for n in self.nodes):
                return
            time.sleep(0.1)
        hint = ""
        try:
            if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1":
                hint = ("; br_netfilter passes bridged traffic through iptables: a FORWARD policy "
                        f"of DROP blocks it (iptables -I FORWARD -i {self.bridge} -j ACCEPT)")
        except OSError:
            pass
        raise RuntimeError(f"virtual cluster nodes not idle in {timeout:.0f}s (sinfo: {out!r}); "
                           f"see {self.root}/ctl/slurmctld.log and nodes/*/slurmd.log{hint}")

    def check_isolated(self, name: str | None = None, also: tuple = ()) -> None:
        """Raise unless outside addresses are unreachable from node ``name`` (default: the first).

        Outside: a few public addresses, the machine's default gateways and its own
        addresses off the cluster network, and ``also``.
        """
        name = name or self.nodes[0]
        outside = [*OUTSIDE, *also]
        for route in _ip_json("route", "show", "default") + _ip_json("-6", "route", "show", "default"):
            if route.get("gateway"):
                outside.append(route["gateway"])
        for link in _ip_json("addr"):
            for a in link.get("addr_info", []):
                addr = ipaddress.ip_address(a["local"])
                if not addr.is_loopback and not addr.is_link_local and addr not in self.subnet:
                    outside.append(str(addr))
        probe = ("import socket, sys\n"
                 "bad = []\n"
                 "for a in sys.argv[1:]:\n"
                 "    fam = socket.AF_INET6 if ':' in a else socket.AF_INET\n"
                 "    try:\n"
                 "        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3)\n"
                 "        s.connect((a, 22)); bad.append(a + ' connected')\n"
                 "    except socket.timeout:\n"
                 "        bad.append(a + ' timed out (routed)')\n"
                 "    except OSError as e:\n"
                 "        if e.errno == 111: bad.append(a + ' refused (reachable)')\n"
                 "print('\\n'.join(bad))\n")
        r = self.run(name, sys.executable, "-I", "-S", "-c", probe, *outside, cluster_env=False,
                     timeout=60, cwd="/")
        routes = self.run(name, _tool("ip"), "route", "show", "default", cluster_env=False, cwd="/")
        routes6 = self.run(name, _tool("ip"), "-6", "addr", "show", cluster_env=False, cwd="/")
        problems = [line for line in r.stdout.splitlines() if line.strip()]
        if routes.stdout.strip():
            problems.append(f"default route: {routes.stdout.strip()}")
        if routes6.stdout.strip():
            problems.append(f"IPv6 addresses: {routes6.stdout.strip()}")
        if problems:
            raise RuntimeError(f"node {name} reaches outside the cluster: {'; '.join(problems)}")

    # -- faults: a node that dies as a whole, a controller that restarts ----------------------
    def kill_node(self, name: str) -> None:
        """Kill node ``name`` as a power loss would: its init (PID 1 of its namespaces) dies, so the
        kernel kills every process on it at once and its network goes with its namespace."""
        if name not in self.nodes:
            raise ValueError(f"no node {name!r} (nodes: {', '.join(self.nodes)})")
        info = self.inits.get(name, {})
        if not self._init_is_ours(info):
            raise RuntimeError(f"node {name} is not running")
        os.kill(info["init_pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _pid_alive(info["init_pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        ip = _tool("ip")
        while any(link == self.veth(name) for link in self._links()) and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run([ip, "link", "del", self.veth(name)], capture_output=True, timeout=30)
        self.inits[name] = {**info, "stopped": True}
        self._save()

    def start_node(self, name: str, timeout: float = 120) -> None:
        """Start node ``name`` again (new namespaces, network, munged, slurmd, sshd); Slurm takes it
        back when its slurmd registers (ReturnToService=2)."""
        if name not in self.nodes:
            raise ValueError(f"no node {name!r} (nodes: {', '.join(self.nodes)})")
        if self._init_is_ours(self.inits.get(name, {})):
            raise RuntimeError(f"node {name} is running; kill it first")
        self._start_namespaces([name])
        self._save()
        self._wire_network([name])
        self._start_daemons([name])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.client("sinfo", "-h", "-n", name, "-o", "%T", check=False, timeout=30)
            if r.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"node {name} did not come back within {timeout:.0f}s (sinfo: {r.stdout.strip()!r})")

    def node_state(self, name: str) -> str:
        """Slurm's state of a node (idle, allocated, down*, ...)."""
        return self.client("sinfo", "-h", "-n", name, "-o", "%T", check=False, timeout=30).stdout.strip()

    def stop_controller(self) -> None:
        """Stop slurmctld (running jobs go on; clients get no answer until it is back)."""
        pid = int((self.root / CONTROLLER / "slurmctld.pid").read_text().split()[0])
        self.run(CONTROLLER, "kill", "-TERM", str(pid), check=False, cwd="/")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.run(CONTROLLER, "kill", "-0", str(pid), check=False, cwd="/").returncode != 0:
                return
            time.sleep(0.2)
        raise RuntimeError("slurmctld did not stop within 60s")

    def start_controller(self, timeout: float = 60) -> None:
        """Start slurmctld again; it reloads its saved state (the jobs) from StateSaveLocation."""
        log = open(self.dir(CONTROLLER) / "start.log", "ab")
        p = subprocess.Popen(self.node_argv(CONTROLLER, [_tool("slurmctld")], cwd="/"), env=self._daemon_env(),
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if p.wait(timeout=60) != 0:
            raise RuntimeError(f"slurmctld did not start: {(self.dir(CONTROLLER) / 'start.log').read_text()[-2000:]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client("sinfo", "-h", check=False, timeout=30).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"slurmctld does not answer {timeout:.0f}s after its start")

    def alive(self) -> bool:
        return any(self._init_is_ours(v) for v in self.inits.values())

    def _init_is_ours(self, info: dict) -> bool:
        pid = info.get("init_pid")
        if not pid or not _pid_alive(pid):
            return False
        try:
            return _ns_inode(pid, "pid") == info["ns"]["pid"]
        except OSError:
            return False

    def stop(self, timeout: float = 20) -> None:
        """Kill every process of the cluster and remove its links; the state dir stays."""
        # Killing a node's init (PID 1 of its PID namespace) makes the kernel kill the rest.
        for info in self.inits.values():
            if self._init_is_ours(info):
                try:
                    os.kill(info["init_pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for info in self.inits.values():
            pid = info.get("unshare_pid")
            proc = next((p for p in self._procs if p.pid == pid), None)
            if proc is not None:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            elif pid and "unshare" in _cmdline(pid) and str(self.root) in _cmdline(pid):
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        self._procs.clear()
        ip = _tool("ip") if _which("ip") else None
        if ip and self.bridge:
            # The veths go with their namespaces; delete what is left, then the bridge.
            for link in self._links():
                subprocess.run([ip, "link", "del", link], capture_output=True, timeout=30)
            while self._links() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.state_file.exists():
            self.inits = {k: {**v, "stopped": True} for k, v in self.inits.items()}
            self._save()

    def _links(self) -> list[str]:
        if not self.bridge:
            return []
        names = [link.get("ifname", "") for link in _ip_json("link")]
        return [n for n in names if n == self.bridge or n.startswith(self.bridge + "-")]

    def leftovers(self) -> list[str]:
        """What of this cluster still exists (empty after a clean stop)."""
        found = [f"link {n}" for n in self._links()]
        inodes = {(k, v) for info in self.inits.values() for k, v in info.get("ns", {}).items()}
        root = str(self.root)
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            cmd = _cmdline(d)
            if not cmd:
                continue
            # Namespace inode numbers are reused once freed: a process counts when it is in
            # one of our PID namespaces and in another of our namespaces or names our root.
            try:
                ours = [k for k in ("pid", "net", "mnt", "uts", "ipc")
                        if (k, os.stat(f"/proc/{d}/ns/{k}").st_ino) in inodes]
            except OSError:
                continue
            if ("pid" in ours and (len(ours) > 1 or root in cmd)) or root in cmd:
                found.append(f"process {d} ({','.join(ours) or 'root namespaces'}): {cmd[:120]}")
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if root in line or any(f"[{ino}]" in line for _, ino in inodes):
                found.append(f"mount {line}")
        return found

    def status(self) -> dict:
        out = {"root": str(self.root), "subnet": str(self.subnet), "bridge": self.bridge,
               "persistent": self.persistent,
               "namespaces": {n: {"init_pid": v.get("init_pid"), "alive": self._init_is_ours(v),
                                  "ip": self.ip(n)} for n, v in self.inits.items()}}
        if self.alive():
            r = self.client("sinfo", "-h", "-N", "-o", "%N %T %c", check=False, timeout=30)
            out["sinfo"] = (r.stdout or r.stderr).strip().splitlines()
        return out


# -- the init of a namespace (PID 1 there) ----------------------------------------------
_MS_BIND = 4096


def _mount(libc, src, target, fstype=None, flags=0, data=None) -> None:
    enc = lambda s: None if s is None else str(s).encode()  # noqa: E731
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {target}: {os.strerror(err)}")


def _node_init(ready_fd: int, root: str, cfg: dict) -> None:
    if cfg.get("login"):  # a PID namespace only: nothing to set up
        _serve_as_init(ready_fd)
    libc = ctypes.CDLL(None, use_errno=True)
    for conf in ("all", "default"):
        p = Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6")
        if p.exists():
            p.write_text("1")
    # Directories under the masked ones that every node shares: keep handles to them
    # before the tmpfs hide them, bind them back at the same path afterwards.
    handles = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in cfg["shared"]}
    file_handles = {src: os.open(src, os.O_PATH) for src in cfg["binds"] if not src.startswith("/run/")}
    _mount(libc, "tmpfs", "/run", "tmpfs", 0, "mode=0755")
    for d, mode in (("/run/munge", 0o755), ("/run/slurm", 0o755), ("/run/slurm/spool", 0o755),
                    ("/run/sshd", 0o755), ("/run/lock", 0o1777)):
        os.mkdir(d)
        os.chmod(d, mode)
    os.chown("/run/munge", cfg["munge_uid"], cfg["munge_gid"])
    _mount(libc, "tmpfs", "/tmp", "tmpfs", 0, "mode=1777")
    _mount(libc, "tmpfs", "/dev/shm", "tmpfs", 0, "mode=1777")
    for path, fd in handles.items():
        os.makedirs(path, exist_ok=True)
        # Not MS_REC: that would also copy the tmpfs now mounted on a shared /tmp itself.
        _mount(libc, f"/proc/self/fd/{fd}", path, None, _MS_BIND)
    for src, target in cfg["binds"].items():
        source = f"/proc/self/fd/{file_handles[src]}" if src in file_handles else src
        _mount(libc, source, target, None, _MS_BIND)
    for target, what in cfg["masks"].items():
        if what == "tmpfs":
            os.makedirs(target, exist_ok=True)  # absent where it lies on a private tmpfs
            _mount(libc, "tmpfs", target, "tmpfs", 0, "mode=0755")
        else:
            _mount(libc, what, target, None, _MS_BIND)
    for fd in [*handles.values(), *file_handles.values()]:
        os.close(fd)
    socket.sethostname(cfg["hostname"])
    os.chdir("/")
    _serve_as_init(ready_fd)


def _serve_as_init(ready_fd: int) -> None:
    """Say ready, then reap orphans until SIGTERM (or SIGKILL from outside)."""
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)

    def _exit(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    while True:  # reap the orphans of the node
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(1)


# -- command line ----------------------------------------------------------------------
def main(argv: list[str]) -> int:
    if argv and argv[0] == "_init":
        _node_init(int(argv[1]), argv[2], json.loads(argv[3]))
        return 0
    ap = argparse.ArgumentParser(prog="cluster.py", description="A multi-node Slurm in namespaces.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start it; prints the environment to export")
    s.add_argument("dir")
    s.add_argument("--nodes", type=int, default=3)
    s.add_argument("--cpus-per-node", type=int, default=4)
    s.add_argument("--shared", action="append", default=[],
                   help="a directory under /tmp, /dev/shm or /run to share with every node")
    for name in ("stop", "status", "stop-controller", "start-controller"):
        sub.add_parser(name).add_argument("dir")
    for name, text in (("kill-node", "kill a node as a whole (its namespace init): a power loss"),
                       ("start-node", "start a killed node again")):
        n = sub.add_parser(name, help=text)
        n.add_argument("dir")
        n.add_argument("node")
    e = sub.add_parser("exec", help="run a command on a node: exec DIR NODE -- CMD...")
    e.add_argument("dir")
    e.add_argument("node")
    e.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.cmd == "start":
        c = VirtualCluster(args.dir, nodes=args.nodes, cpus_per_node=args.cpus_per_node,
                           shared=args.shared, persistent=True)
        c.start()
        for k, v in c.env().items():
            print(f"export {k}={shlex.quote(v)}")
        return 0
    c = VirtualCluster.load(args.dir)
    if args.cmd == "stop":
        c.stop()
        left = c.leftovers()
        for item in left:
            print(f"left over: {item}", file=sys.stderr)
        return 1 if left else 0
    if args.cmd in ("kill-node", "start-node"):
        (c.kill_node if args.cmd == "kill-node" else c.start_node)(args.node)
        return 0
    if args.cmd in ("stop-controller", "start-controller"):
        (c.stop_controller if args.cmd == "stop-controller" else c.start_controller)()
        return 0
    if args.cmd == "status":
        st = c.status()
        print(json.dumps(st, indent=1))
        return 0 if c.alive() else 3
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    return subprocess.run(c.node_argv(args.node, cmd or ["/bin/bash"]),
                          env={**os.environ, **c.env()}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
