"""The line that starts the trainer on every rank, per MPI flavour and engine (pure).

A launch line is a sequence of words.  Literal words go through ``shlex.quote``;
the few words only the batch shell can know (the host list, the first host) are
:class:`Shell` fragments that reference variables set by :attr:`Launch.setup`,
always double-quoted.  ``Launch.argv`` gives a plain argv (only when nothing is
left to the shell, e.g. the local scheduler); ``Launch.line`` the quoted text.

Per ``mpi`` (engine horovod):
  openmpi    mpirun -np N -npernode G -bind-to none -map-by slot -x NCCL_DEBUG ... plus the
             transport of the profile's fabric (OPENMPI_TRANSPORTS; e.g. -mca pml ucx on
             InfiniBand).  Open MPI reads the Slurm allocation itself and starts its
             daemons through srun; on PBS without TM it gets -hostfile $PBS_NODEFILE
  mpich,     mpiexec -n N -ppn G -genvall -genv NAME VALUE (Hydra reads the Slurm/PBS
  intelmpi   allocation; -f $PBS_NODEFILE on PBS).  -genvall, not -genvlist: with ssh
             bootstrap a list would replace the environment modules set (CUDA_HOME, I_MPI_*...)
  mvapich2   the same Hydra mpiexec (MVAPICH2 ships it) plus MV2_ENABLE_AFFINITY=0 so Horovod's
             background thread is not pinned to the rank's core; mpirun_rsh is not used because
             it needs an explicit hostfile and ssh, which Hydra derives from the allocation.
  srun       plain srun with the site's MpiDefault (Slurm only): Cray MPICH (Piz Daint) starts
             only under srun and has no Hydra mpiexec.
  srun-pmix  srun --mpi=pmix (Slurm only).  Not --mpi=pmi2: Open MPI 5 under pmi2 silently
             starts N singletons that each train alone.
  gloo       horovodrun --gloo -np N -H host1:G,host2:G (hosts from `scontrol show hostnames`,
             $PBS_NODEFILE, or localhost), written ``python -m horovod.runner.launch`` (the
             module behind the horovodrun script) so the profile's interpreter runs it; it
             reaches other nodes over ssh
Engine ddp always uses torchrun (as ``python -m torch.distributed.run`` so the profile's
interpreter is used): c10d rendezvous on the first host, one torchrun per node started
by srun with all the node's CPUs (Slurm), by the flavour's MPI launcher with one process
per node (PBS), or directly (one node).

The container prefix (``apptainer|singularity exec [--nv] [options] image``) wraps the
per-rank trainer command under MPI/srun launchers, and the launcher itself for torchrun
(each node's torchrun spawns its ranks inside the container) and for horovodrun on one
node.  horovodrun across nodes would start the remote ranks over ssh on the bare hosts,
outside the image, so that combination is refused.

With ``network_interface`` in the profile the script exports it to Open MPI
(btl/oob_tcp_if_include), Gloo and NCCL's socket transport (GLOO_/NCCL_SOCKET_IFNAME),
and horovodrun gets ``--network-interfaces``: otherwise they may pick an interface
that does not reach the other nodes, or resolve the host name to a loopback address.
"""
from __future__ import annotations

import shlex
import zlib
from dataclasses import dataclass
from pathlib import PurePath

from larsctl.config.env import VARIABLE, variable_name
from larsctl.config.profiles import HYDRA_FLAVOURS, SRUN_FLAVOURS
from larsctl.facts.jobdir import JobPaths


class LaunchError(ValueError):
    """A profile combination that has no launch line (e.g. srun on PBS)."""


class Shell(str):
    """A word the batch shell expands at run time (already quoted)."""


def value_of(x) -> str:
    return str(getattr(x, "value", x))  # profile enums or plain strings


def quote_word(word: str) -> str:
    return str(word) if isinstance(word, Shell) else shlex.quote(str(word))


def join(words) -> str:
    return " ".join(quote_word(w) for w in words)


# Variables every MPI launcher forwards to remote ranks (plus the profile's env).
PASS_ENV = ("NCCL_DEBUG", "LD_LIBRARY_PATH", "PATH", "PYTHONPATH", "LARSCTL_DATA")
# What the profile's network_interface is exported as.
INTERFACE_ENV = ("OMPI_MCA_btl_tcp_if_include", "OMPI_MCA_oob_tcp_if_include", "GLOO_SOCKET_IFNAME",
                 "NCCL_SOCKET_IFNAME")
# Open MPI's transport per profile fabric, as Open MPI's documentation gives it (v5.0.x pages
# under docs.open-mpi.org/en/v5.0.x/, v4 FAQ at www.open-mpi.org/faq/).  Each word set works
# with Open MPI 4.1 and 5.0: "vader" is 5.0's alias of its renamed "sm" BTL (4.1 knows only
# vader), and excluding a BTL that 5.0 no longer ships (^openib) is allowed.
OPENMPI_TRANSPORTS: dict[str, tuple[str, ...]] = {
    # tuning-apps/networking/tcp.html ("mpirun --mca pml ob1 --mca btl tcp,sm,self") and
    # shared-memory.html (vader = sm); v4 FAQ category=tcp
    "tcp": ("-mca", "pml", "ob1", "-mca", "btl", "tcp,self,vader"),
    # tuning-apps/networking/ib-and-roce.html: InfiniBand and RoCE go through the UCX PML;
    # v4 FAQ category=openfabrics: 4.x still builds the deprecated openib BTL, kept out with ^openib
    "infiniband": ("-mca", "pml", "ucx", "-mca", "btl", "^openib"),
    "roce": ("-mca", "pml", "ucx", "-mca", "btl", "^openib"),
    # release-notes/networks.html: Omni-Path PSM2 is an MTL of the cm PML; v4 FAQ category=opa (-mca mtl psm2)
    "omnipath": ("-mca", "pml", "cm", "-mca", "mtl", "psm2"),
    # release-notes/networks.html: ob1's ugni BTL drives Cray Gemini/Aries
    "aries": ("-mca", "pml", "ob1", "-mca", "btl", "ugni,self,vader"),
    # tuning-apps/networking/ofi.html: HPE Slingshot 11 through libfabric, the ofi MTL of the cm PML
    "slingshot": ("-mca", "pml", "cm", "-mca", "mtl", "ofi"),
}
HOSTS_VAR = "LARSCTL_HOSTS"    # host1:G,host2:G (horovodrun -H)
MASTER_VAR = "LARSCTL_MASTER"  # first host (torchrun rendezvous)


@dataclass(frozen=True)
class Launch:
    words: tuple
    setup: tuple[str, ...] = ()  # shell lines that set the variables the words use

    @property
    def line(self) -> str:
        return join(self.words)

    @property
    def argv(self) -> list[str]:
        if any(isinstance(w, Shell) for w in self.words):
            raise LaunchError("this launch line needs the batch shell (it uses the host list)")
        return [str(w) for w in self.words]


def trainer_command(profile, job_dir) -> list[str]:
    job_dir = str(job_dir)
    return [profile.python, "-m", "trainer", "--config", str(JobPaths(job_dir).job_yaml),
            "--out-dir", job_dir]


def container_prefix(profile) -> list[str]:
    c = profile.container
    if not c:
        return []
    gpu = ["--nv"] if value_of(profile.gpu_type) != "cpu" and "--nv" not in c.options else []
    return [value_of(c.runtime), "exec", *gpu, *c.options, shell_path(c.image)]


def _hosts_command(scheduler: str) -> str:
    if scheduler == "slurm":
        return 'scontrol show hostnames "$SLURM_JOB_NODELIST"'
    if scheduler == "pbs":
        return "awk '!seen[$0]++' \"$PBS_NODEFILE\""  # unique, in allocation order
    return "echo localhost"


def hosts_expr(scheduler: str) -> str:
    """A shell word: the job's hosts, comma-separated (this host's name on the local scheduler)."""
    if scheduler not in ("slurm", "pbs"):
        return '"${HOSTNAME:-localhost}"'
    return f'"$({_hosts_command(scheduler)} | paste -sd, -)"'


def _hosts_setup(scheduler: str, per_node: int) -> tuple[str, ...]:
    """Shell line setting LARSCTL_HOSTS (host1:G,host2:G) for horovodrun -H."""
    if scheduler not in ("slurm", "pbs"):
        return (f"{HOSTS_VAR}=localhost:{per_node}",)
    awk = f"awk -v g={per_node} '{{printf \"%s%s:%d\", (NR > 1 ? \",\" : \"\"), $0, g}}'"
    return (f"{HOSTS_VAR}=$({_hosts_command(scheduler)} | {awk})",)


def _master_setup(scheduler: str) -> tuple[str, ...]:
    """Shell line setting LARSCTL_MASTER (the first host: torchrun's rendezvous)."""
    return (f"{MASTER_VAR}=$({_hosts_command(scheduler)} | head -n 1)",)


def _rdzv_port(job_id: str) -> int:
    # Distinct jobs sharing a first node should not fight over one port.
    return 29400 + zlib.crc32(job_id.encode()) % 500


def _interface_env(profile) -> dict[str, str]:
    iface = profile.network_interface
    return {name: iface for name in INTERFACE_ENV} if iface else {}


def _mpi_env_names(profile) -> list[str]:
    names = [*PASS_ENV, *sorted(_interface_env(profile)), *sorted(profile.env)]
    return list(dict.fromkeys(names))  # once each, in order


def _openmpi(n: int, per_node: int, profile, scheduler: str) -> list:
    words = ["mpirun", "-np", n, "-npernode", per_node, "-bind-to", "none", "-map-by", "slot"]
    for name in _mpi_env_names(profile):
        words += ["-x", name]
    words += OPENMPI_TRANSPORTS[value_of(profile.fabric)]
    if scheduler == "pbs":
        words += ["-hostfile", Shell('"$PBS_NODEFILE"')]
    if value_of(profile.gpu_type) == "cpu":
        words.append("--oversubscribe")  # CPU worker processes may outnumber cores
    return words


def _hydra(n: int, per_node: int, profile, scheduler: str) -> list:
    words = ["mpiexec", "-n", n, "-ppn", per_node, "-genvall"]
    if value_of(profile.mpi) == "mvapich2":
        words += ["-genv", "MV2_ENABLE_AFFINITY", "0"]
        if value_of(profile.gpu_type) != "cpu":
            words += ["-genv", "MV2_USE_CUDA", "1"]
    if scheduler == "pbs":
        words += ["-f", Shell('"$PBS_NODEFILE"')]
    return words


def _srun(n: int, per_node: int, nodes: int, mpi: str, cpus_per_task: int | None = None) -> list:
    words = ["srun", *(["--mpi=pmix"] if mpi == "srun-pmix" else []), f"--nodes={nodes}", f"--ntasks={n}",
             f"--ntasks-per-node={per_node}"]
    if cpus_per_task:
        words.append(f"--cpus-per-task={cpus_per_task}")  # explicit: each task gets them all
    return [*words, "--cpu-bind=none", "--kill-on-bad-exit=1"]


def build_launch(profile, plan, job_dir, *, scheduler: str | None = None, job_id: str = "job") -> Launch:
    """The launch line for ``plan`` on ``profile``; ``scheduler`` defaults to the profile's."""
    scheduler = scheduler or value_of(profile.scheduler)
    mpi, engine = value_of(profile.mpi), value_of(profile.engine)
    n, per_node, nodes = plan.gpus, plan.gpus_per_node, plan.nodes
    trainer = trainer_command(profile, job_dir)
    box = container_prefix(profile)
    if mpi in SRUN_FLAVOURS and scheduler != "slurm":
        raise LaunchError(f"mpi: {mpi} needs scheduler slurm (profile {profile.name} uses {scheduler})")

    if engine == "ddp":
        return _torchrun(profile, plan, trainer, box, scheduler, job_id)
    if mpi == "gloo":
        if box and nodes > 1:
            raise LaunchError(f"mpi gloo with a container on {nodes} nodes: horovodrun would start the other "
                              "nodes' ranks over ssh outside the image; use mpi openmpi, srun or srun-pmix "
                              "(they start every rank in the container), or engine ddp")
        # horovodrun, run by the profile's interpreter (no PATH or venv needed for it)
        iface = ["--network-interfaces", profile.network_interface] if profile.network_interface else []
        words = [*box, profile.python, "-m", "horovod.runner.launch", "--gloo", *iface, "-np", n,
                 "-H", Shell(f'"${HOSTS_VAR}"'), *trainer]
        return Launch(tuple(words), _hosts_setup(scheduler, per_node))
    if mpi == "openmpi":
        launcher = _openmpi(n, per_node, profile, scheduler)
    elif mpi in HYDRA_FLAVOURS:
        launcher = _hydra(n, per_node, profile, scheduler)
    elif mpi in SRUN_FLAVOURS:
        launcher = _srun(n, per_node, nodes, mpi)
    else:
        raise LaunchError(f"mpi: unknown flavour {mpi!r}")
    return Launch(tuple([*launcher, *box, *trainer]))


# What launch_needs reads off a line: the executables that may start it, and the launcher
# modules the profile's python runs (python -m MODULE), by the name of their command.
LAUNCHER_EXECUTABLES = ("mpirun", "mpiexec", "srun")
LAUNCHER_MODULES = {"horovod.runner.launch": "horovodrun", "torch.distributed.run": "torchrun"}


def launch_needs(profile, plan) -> frozenset[str]:
    """What the line :func:`build_launch` writes for ``plan`` on ``profile`` needs, by name (pure).

    mpirun, mpiexec, srun   the executable the line starts with (every rank, or a torchrun per node)
    pmix                    srun's PMIx plugin (srun --mpi=pmix)
    horovodrun, torchrun    the launcher module the profile's python runs
    apptainer, singularity  the container runtime the trainer (or its launcher) runs in
    ssh                     horovodrun starts the other nodes' ranks over ssh
    mpi, gloo               how the ranks talk: Horovod built with MPI, or with Gloo (horovodrun
                            --gloo); for engine ddp on CPUs, torch.distributed's gloo backend
    nccl                    GPU allreduce: Horovod's NCCL operations, torch.distributed's nccl

    Read off the line itself, so the two cannot disagree; raises LaunchError where
    build_launch does.
    """
    words = [str(w) for w in build_launch(profile, plan, "job", job_id="needs").words]
    needs = set()
    if words[0] in LAUNCHER_EXECUTABLES:
        needs.add(words[0])
    needs.update(LAUNCHER_MODULES[b] for a, b in zip(words, words[1:]) if a == "-m" and b in LAUNCHER_MODULES)
    box = container_prefix(profile)
    if box:
        needs.add(box[0])
    if "--mpi=pmix" in words:
        needs.add("pmix")
    if "horovodrun" in needs and plan.nodes > 1:
        needs.add("ssh")
    engine, gpu = value_of(profile.engine), value_of(profile.gpu_type) != "cpu"
    if engine == "horovod":
        needs.add("gloo" if "--gloo" in words else "mpi")
    if gpu:
        needs.add("nccl")
    elif engine == "ddp":
        needs.add("gloo")
    return frozenset(needs)


def _torchrun(profile, plan, trainer, box, scheduler, job_id) -> Launch:
    python, module_args = trainer[0], trainer[1:]
    if plan.nodes == 1:
        rdzv = ["--standalone"]  # picks a free port: no clash between jobs on one node
        setup: tuple[str, ...] = ()
    else:
        # Every node's agent must join within the job's start-up bound (c10d's own default:
        # 600 s), so that a node that never comes up ends the segment instead of waiting.
        rdzv = ["--rdzv-backend=c10d", "--rdzv-id", job_id,
                "--rdzv-endpoint", Shell(f'"${MASTER_VAR}:{_rdzv_port(job_id)}"'),
                "--rdzv-conf", f"join_timeout={profile.fault_settings().startup_s}"]
        setup = _master_setup(scheduler)
    torchrun = [*box, python, "-m", "torch.distributed.run", f"--nnodes={plan.nodes}",
                f"--nproc-per-node={plan.gpus_per_node}", *rdzv, *module_args]
    if plan.nodes == 1:
        return Launch(tuple(torchrun), setup)
    mpi = value_of(profile.mpi)
    if scheduler == "slurm":
        per_node = _srun(plan.nodes, 1, plan.nodes, "srun", cpus_per_task=profile.cpus_per_node)
    elif mpi == "openmpi":
        per_node = _openmpi(plan.nodes, 1, profile, scheduler)
    elif mpi in HYDRA_FLAVOURS:
        per_node = _hydra(plan.nodes, 1, profile, scheduler)
    else:
        raise LaunchError(f"engine ddp on {plan.nodes} nodes under {scheduler} needs an MPI launcher "
                          f"to start one torchrun per node; mpi {mpi} has none")
    return Launch(tuple([*per_node, *torchrun]), setup)


def shell_path(text: str) -> Shell:
    """A cluster-side path where ``~`` and $VARS expand on the cluster and nothing else does."""
    parts = []
    if text == "~" or text.startswith("~/"):
        parts.append('"$HOME"')
        text = text[1:]
    pos = 0
    for m in VARIABLE.finditer(text):
        if m.start() > pos:
            parts.append(shlex.quote(text[pos:m.start()]))
        parts.append(f'"${{{variable_name(m)}}}"')
        pos = m.end()
    if pos < len(text) or not parts:
        parts.append(shlex.quote(text[pos:]))
    return Shell("".join(parts))


def setup_lines(profile) -> list[str]:
    """Module loads, environment exports and venv activation, each value quoted."""
    lines = []
    if profile.modules:
        lines += [f"module load {shlex.quote(m)}" for m in profile.modules]
    # Set every forwarded variable, so `mpirun -x NAME` never warns about a missing one.
    lines += ['export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"',
              'export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" PYTHONPATH="${PYTHONPATH:-}"',
              'export LARSCTL_DATA="${LARSCTL_DATA:-$HOME/.cache/larsctl/datasets}"']
    env = {**_interface_env(profile), **profile.env}  # the profile's own env wins
    lines += [f"export {name}={shlex.quote(str(value))}" for name, value in sorted(env.items())]
    if profile.venv:
        venv = shell_path(str(PurePath(profile.venv) / "bin" / "activate"))
        # shellcheck cannot follow a path only the cluster has
        lines += ["# shellcheck disable=SC1090,SC1091", f"source {venv}"]
    return lines
