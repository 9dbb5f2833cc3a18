"""Cluster profiles: one YAML file per cluster, validated by a pydantic model.

Shipped profiles live in ``clusters/`` at the repository root (installs are
editable); user profiles in ``$LARSCTL_CONFIG_DIR/clusters`` (default
``~/.config/larsctl/clusters``) override shipped ones with the same ``name``.
Every problem is one line: ``<file>:<line>: <field>: <what was expected> (got <value>)``.
A file that does not load is a warning for every command and the error of any command
that uses the profile it may define (by its file name or its ``name:`` line).
"""
from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)

import larsctl
from larsctl.config.env import config_dir, expand_path
from larsctl.config.yamlio import load_model
from larsctl.errors import UserError, warn
from larsctl.facts.hardware import GPUS
from larsctl.facts.rules import DEFAULT_WALLTIME_FACTOR as DEFAULT_FACTOR
from larsctl.facts.rules import DEFAULT_WALLTIME_MINIMUM_S as DEFAULT_MINIMUM_SECONDS
from trainer.supervisor.causes import FaultSettings, SettingsError

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
NAME_LINE_RE = re.compile(r"^name:[ \t]*(['\"]?)([A-Za-z0-9_.-]+)\1[ \t]*(?:#.*)?$", re.M)  # name: x
INTERFACE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")  # a Linux network interface name
DIRECTIVE_RE = re.compile(r"(--?[A-Za-z][A-Za-z0-9-]*)(?:([= ])(\S.*))?")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WALLTIME_RE = re.compile(r"(?:(\d+)-)?(\d{1,3}):([0-5]\d):([0-5]\d)")
MARGIN_RE = re.compile(r"(\d+):([0-5]\d)")
DEFAULT_SIGNAL_MARGIN = 300


class ProfileError(UserError):
    """An invalid or unknown cluster profile (exit 2, one line)."""


def choices(name: str, *values: str) -> type[enum.Enum]:
    """A str enum whose members are exactly ``values`` (pydantic lists them in errors)."""
    return enum.Enum(name, {value: value for value in values}, type=str)


Scheduler = choices("Scheduler", "local", "slurm", "pbs")
GpuType = choices("GpuType", *GPUS)
# MPI flavours, grouped by the launcher larsctl/schedulers/launch.py starts the ranks with
# (it imports these groups): Open MPI's mpirun; Hydra's mpiexec (MPICH, Intel MPI, MVAPICH2);
# srun: plain srun with the site's MpiDefault (Cray MPICH starts only under srun),
# srun-pmix: srun --mpi=pmix (Open MPI or MPICH built with PMIx); horovodrun --gloo.
OPENMPI_FLAVOURS = ("openmpi",)
HYDRA_FLAVOURS = ("mpich", "intelmpi", "mvapich2")
SRUN_FLAVOURS = ("srun", "srun-pmix")
GLOO_FLAVOURS = ("gloo",)
MPI_FLAVOURS = (*OPENMPI_FLAVOURS, *HYDRA_FLAVOURS, *SRUN_FLAVOURS, *GLOO_FLAVOURS)
Mpi = choices("Mpi", *MPI_FLAVOURS)
# The network between nodes.  Open MPI's launch line takes its transport from it
# (larsctl/schedulers/launch.py OPENMPI_TRANSPORTS); the other flavours choose their own.
# Never derived from interconnect_gbps: 100 Gbit/s may be InfiniBand, RoCE or Ethernet.
FABRICS = ("tcp", "infiniband", "roce", "omnipath", "aries", "slingshot")
Fabric = choices("Fabric", *FABRICS)
Engine = choices("Engine", "horovod", "ddp")
# gres: #SBATCH --gres=gpu:N; gpus-per-node: #SBATCH --gpus-per-node=N
GpuDirective = choices("GpuDirective", "gres", "gpus-per-node")
ContainerRuntime = choices("ContainerRuntime", "apptainer", "singularity")


def walltime_seconds(text: str) -> int:
    """Seconds in a validated "HH:MM:SS" or "D-HH:MM:SS" string."""
    match = WALLTIME_RE.fullmatch(text)
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _check_name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError("expected letters, digits, '_', '.' or '-' only")
    return value


def _check_env_name(value: str) -> str:
    if not ENV_NAME_RE.fullmatch(value):
        raise ValueError("expected a shell variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return value


def _check_interface(value: str) -> str:
    if not INTERFACE_RE.fullmatch(value):
        raise ValueError("expected a network interface name such as ib0, eth0 or ipogif0")
    return value


def _check_directive(value: str) -> str:
    if re.search(r"[\x00-\x1f\x7f]", value) or not DIRECTIVE_RE.fullmatch(value.strip()):
        raise ValueError('expected one scheduler option such as "--reservation=big" or "-l place=scatter"')
    return value.strip()


def split_directive(text: str) -> tuple[str, str, str | None]:
    """(flag, separator, value) of a validated directive: ``--qos=high`` -> ("--qos", "=", "high")."""
    flag, sep, value = DIRECTIVE_RE.fullmatch(text).groups()
    return flag, sep or "", value


def _check_faults(value: dict) -> dict:
    try:
        FaultSettings.from_dict(value, "faults")
    except SettingsError as exc:
        raise ValueError(str(exc).removeprefix("faults: ").removeprefix("faults.")) from None
    return value


def _check_walltime(value: str) -> str:
    match = WALLTIME_RE.fullmatch(value)
    if not match or walltime_seconds(value) == 0:
        raise ValueError('expected "HH:MM:SS" or "D-HH:MM:SS" (longer than zero)')
    return value


def _parse_margin(value: object) -> object:
    """USR2 margin: seconds, or "MM:SS" (the same form as Slurm's --signal)."""
    if isinstance(value, str):
        match = MARGIN_RE.fullmatch(value.strip())
        if not match:
            raise ValueError('expected seconds or "MM:SS"')
        return int(match.group(1)) * 60 + int(match.group(2))
    return value


def _margin_mapping(value: object) -> object:
    if not isinstance(value, (dict, BaseModel)):
        raise ValueError("expected a mapping with factor and minimum")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
Walltime = Annotated[str, AfterValidator(_check_walltime)]
Interface = Annotated[str, AfterValidator(_check_interface)]
Directive = Annotated[str, AfterValidator(_check_directive)]
Seconds = Annotated[int, BeforeValidator(_parse_margin), Field(ge=0)]
Faults = Annotated[dict, AfterValidator(_check_faults)]


class WalltimeMargin(BaseModel):
    """What a job asks for beyond its estimate: max(estimate x factor, estimate + minimum)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factor: float = Field(DEFAULT_FACTOR, ge=1)
    minimum: Seconds = DEFAULT_MINIMUM_SECONDS


Margin = Annotated[WalltimeMargin, BeforeValidator(_margin_mapping)]


class Container(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runtime: ContainerRuntime
    image: str = Field(min_length=1)
    options: list[str] = []


class ClusterProfile(BaseModel):
    """One cluster: what the scheduler offers and how a job gets its environment."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True,
                              use_enum_values=True, frozen=True)

    name: Name
    description: str = ""
    scheduler: Scheduler
    nodes: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)   # for gpu_type cpu: worker processes per node
    gpu_type: GpuType
    cpus_per_node: int = Field(ge=1)
    interconnect_gbps: float = Field(gt=0)  # per-node injection bandwidth, Gbit/s
    fabric: Fabric = "tcp"             # the network between nodes (tcp: Ethernet or IPoIB)
    mpi: Mpi
    engine: Engine
    partition: str | None = None       # Slurm partition / PBS queue
    account: str | None = None         # Slurm account / PBS project
    constraint: str | None = None      # Slurm node features (#SBATCH --constraint), e.g. "gpu"
    directives: list[Directive] = []   # more scheduler options, one per #SBATCH/#PBS line
    # The interface ranks talk over between nodes (ib0, ipogif0...): scripts export it to
    # Open MPI (btl/oob_tcp_if_include), Gloo, NCCL's socket transport and horovodrun.
    network_interface: Interface | None = None
    walltime: Walltime
    signal_margin: Seconds = DEFAULT_SIGNAL_MARGIN
    # Each job asks for its estimate with this margin plus signal_margin, at most walltime
    # (larsctl/planning/walltime.py).
    walltime_margin: Margin = WalltimeMargin()
    gpu_directive: GpuDirective = "gres"
    modules: list[str] = []
    env: dict[EnvName, str] = {}
    venv: str | None = None
    container: Container | None = None
    workdir: str = Field(min_length=1)
    python: str = Field("python", min_length=1)
    # What jobs do about faults (trainer.supervisor.causes.FaultSettings): bound_s, startup_s,
    # crash_resumes, policy: {cause: resume|stop}; a submit's --on-fault overrides it.
    faults: Faults = {}

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("signal_margin")
    @classmethod
    def _margin_below_walltime(cls, value: int, info: ValidationInfo) -> int:
        walltime = info.data.get("walltime")
        if walltime is not None and value >= walltime_seconds(walltime):
            raise ValueError(f"expected fewer seconds than the walltime {walltime}")
        return value

    @field_validator("constraint")
    @classmethod
    def _constraint_on_slurm(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("scheduler") != "slurm":
            raise ValueError("applies to scheduler slurm only (PBS: put node features in directives)")
        return value

    @property
    def walltime_seconds(self) -> int:
        return walltime_seconds(self.walltime)

    @property
    def signal_margin_seconds(self) -> int:
        return self.signal_margin

    @property
    def max_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def source(self) -> Path | None:
        """The file this profile was read from (None when built in code)."""
        return self._source

    def fault_settings(self) -> FaultSettings:
        return FaultSettings.from_dict(self.faults, "faults")

    def expanded_workdir(self) -> Path:
        """``workdir`` with ``~`` and $VARS expanded here (LARSCTL_HOME has its default)."""
        return Path(expand_path(self.workdir))

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def shipped_dir() -> Path:
    return Path(larsctl.__file__).resolve().parent.parent / "clusters"


def user_dir() -> Path:
    return config_dir() / "clusters"


def read_profile(path: Path | str) -> ClusterProfile:
    """Load and validate one profile file (raises ProfileError with file:line)."""
    path = Path(path)
    profile, _ = load_model(path, ClusterProfile, ProfileError)
    profile._source = path
    return profile


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


@dataclass(frozen=True)
class Broken:
    """A profile file that does not load: its one-line error and the names it may define."""

    error: ProfileError
    names: frozenset[str]


def _claimed_names(path: Path) -> frozenset[str]:
    """A broken file may define its file name's profile, or the one its ``name:`` line names."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    return frozenset({path.stem, *(m.group(2) for m in NAME_LINE_RE.finditer(text))})


def _read_dir(directory: Path) -> tuple[dict[str, ClusterProfile], list[Broken]]:
    """The directory's profiles by name, and its files that do not load (a second file
    with the same name is one of those)."""
    found: dict[str, ClusterProfile] = {}
    broken: list[Broken] = []
    for path in _files(directory):
        try:
            profile = read_profile(path)
        except ProfileError as exc:
            broken.append(Broken(exc, _claimed_names(path)))
            continue
        if profile.name in found:
            error = ProfileError(f"{path}:1: name: {profile.name!r} is already defined in "
                                 f"{found[profile.name].source}")
            broken.append(Broken(error, frozenset({profile.name})))
            continue
        found[profile.name] = profile
    return found, broken


def _usable(name: str, broken: list[Broken]) -> None:
    """Refuse ``name`` with the error of a broken file that may define it."""
    for bad in broken:
        if name in bad.names:
            raise bad.error


_WARNED: set[str] = set()  # the broken files' errors this process has warned about


def _warn(broken: list[Broken]) -> None:
    """One warning per broken file on stderr, once per process (the command goes on)."""
    for bad in broken:
        if bad.error.message not in _WARNED:
            _WARNED.add(bad.error.message)
            warn(f"{bad.error.message} (profile skipped)")


def list_profiles() -> list[ClusterProfile]:
    """Every profile, user files overriding shipped ones of the same name, by name.

    A file that does not load is a warning, and the names it may define are left out
    (a broken override must not be replaced by the shipped profile it was meant to change).
    """
    shipped, broken = _read_dir(shipped_dir())
    user, user_broken = _read_dir(user_dir())
    broken += user_broken
    _warn(broken)
    claimed = set().union(*(bad.names for bad in broken))
    merged = {**shipped, **user}
    return [merged[name] for name in sorted(merged) if name not in claimed]


def load_profile(name_or_path: str | Path) -> ClusterProfile:
    """A profile by name (user dir first, then shipped) or by file path.

    A broken file that may define the name refuses it with that file's error; other
    broken files are warnings.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError(f"{path}: no such profile file")
        return read_profile(path)
    # User files override by ``name`` whatever their file name, so all of them are read.
    # Shipped ones are looked up by file name first.
    user, broken = _read_dir(user_dir())
    _usable(text, broken)
    _warn(broken)
    if text in user:
        return user[text]
    for suffix in (".yaml", ".yml"):
        candidate = shipped_dir() / f"{text}{suffix}"
        if candidate.is_file():
            profile = read_profile(candidate)
            if profile.name == text:
                return profile
    shipped, shipped_broken = _read_dir(shipped_dir())
    _usable(text, shipped_broken)
    _warn(shipped_broken)
    if text not in shipped:
        claimed = set().union(*(bad.names for bad in broken + shipped_broken))
        known = ", ".join(sorted(set(user) | set(shipped) - claimed)) or "none"
        raise ProfileError(f"unknown cluster {text!r}; expected one of: {known} "
                           f"(or add {user_dir() / (text + '.yaml')})")
    return shipped[text]
