"""``larsctl doctor``: does this machine have what a job on a cluster profile needs?

Each check is a plain function returning :class:`Check` rows (status ``ok``,
``warn`` or ``FAIL``, a name, what was found, and for a failing or warning row
the fix); :func:`run_doctor` runs them all for one profile (and recipe) and
returns a :class:`Report`.  The exit code is 1 when a check fails, else 0;
bad input (unknown cluster, invalid profile or recipe file) raises the usual
``UserError`` (exit 2) before any check runs.

Where the checks run
    The Python side (python, trainer, torch and its GPUs, torchvision, DALI,
    Horovod, torchrun/horovodrun, the recipe's data directories) must be what
    the *job* gets, so it runs in one probe process, started the way the batch
    script starts the trainer: in bash, after the profile's ``module load``s
    (through ``bash -lc`` so ``module`` exists), its environment exports and its
    venv activation (``launch.setup_lines``), inside its container if it has one,
    with the profile's ``python`` (for the ``local`` scheduler without a venv, the
    interpreter larsctl runs under comes first on PATH, as ``schedulers/local.py``
    does).  The same shell looks up the launcher executables (mpirun, mpiexec,
    srun, the container runtime) and asks them ``--version``.  larsctl itself never
    imports torch or Horovod: the probe prints one JSON line.
    The scheduler's commands and the workdir are checked from larsctl's own
    environment (that is where ``submit`` runs them), while the probe runs.

Which launcher a profile needs is not kept in a table here: it is read off the
launch line ``schedulers.launch.build_launch`` writes for the profile (its first
word, and any ``python -m`` launcher module in it), so the two cannot disagree.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "FAIL"
PROBE_TIMEOUT_S = 120.0        # an ImageFolder scan of ImageNet on a parallel file system is the slow part
SCHEDULER_TIMEOUT_S = 10.0     # sinfo / qstat: a controller that does not answer in this is down
MIN_PYTHON = (3, 10)           # pyproject's requires-python
MPI_FLAVOURS = ("openmpi", "mpich", "intelmpi", "mvapich2", "srun-pmix")  # Horovod needs MPI built in
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol")  # what larsctl runs
PBS_COMMANDS = ("qsub", "qstat", "qdel")
NODE_LOCAL_FS = ("tmpfs", "ramfs", "devtmpfs")
NODE_LOCAL_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
LAUNCHER_MODULES = {"horovod.runner.launch": "horovodrun", "torch.distributed.run": "torchrun"}
MARKER = "@@larsctl-doctor@@"


# --- rows and the report ---------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One row: ``status`` is ok, warn or FAIL; ``fix`` is set on warn and FAIL rows."""

    status: str
    name: str
    found: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"status": self.status, "name": self.name, "found": self.found, "fix": self.fix}


def ok(name: str, found: str) -> Check:
    return Check(OK, name, found)


def warn(name: str, found: str, fix: str) -> Check:
    return Check(WARN, name, found, fix)


def fail(name: str, found: str, fix: str) -> Check:
    return Check(FAIL, name, found, fix)


@dataclass(frozen=True)
class Report:
    cluster: str
    profile_file: str | None
    recipe: str | None
    checks: tuple[Check, ...]
    seconds: float = 0.0

    @property
    def result(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses else WARN if WARN in statuses else OK

    @property
    def exit_code(self) -> int:
        return 1 if self.result == FAIL else 0

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "profile_file": self.profile_file, "recipe": self.recipe,
                "result": self.result, "exit_code": self.exit_code,
                "counts": {s: self.count(s) for s in (OK, WARN, FAIL)},
                "seconds": round(self.seconds, 2),
                "checks": [c.to_dict() for c in self.checks]}


_STYLE = {OK: {"fg": "green"}, WARN: {"fg": "yellow"}, FAIL: {"fg": "red", "bold": True}}


def render(report: Report) -> str:
    """The table: status, name, what was found; the fix below a warn/FAIL row.

    Statuses carry ``click.style`` colours; ``click.echo`` drops them when the
    output is not a terminal.
    """
    import click

    width = max((len(c.name) for c in report.checks), default=0)
    lines = [f"larsctl doctor: cluster {report.cluster}"
             + (f" ({report.profile_file})" if report.profile_file else "")
             + (f", recipe {report.recipe}" if report.recipe else "")]
    for c in report.checks:
        status = click.style(c.status.ljust(4), **_STYLE[c.status])
        lines.append(f"{status}  {c.name.ljust(width)}  {c.found}")
        if c.fix:
            lines.append(f"{'':4}  {'':{width}}  fix: {c.fix}")
    parts = [f"{report.count(FAIL)} failed"] if report.count(FAIL) else []
    if report.count(WARN):
        parts.append(f"{report.count(WARN)} warning{'s' if report.count(WARN) != 1 else ''}")
    parts.append(f"{report.count(OK)} ok")
    result = click.style(report.result, **_STYLE[report.result])
    lines.append(f"Result: {result} ({', '.join(parts)}; {report.seconds:.1f} s)")
    return "\n".join(lines)


# --- profile ---------------------------------------------------------------------------

def check_profile(profile) -> Check:
    per_node = (f"{profile.gpus_per_node} CPU workers" if profile.gpu_type == "cpu"
                else f"{profile.gpus_per_node} x {profile.gpu_type}")
    return ok("profile", f"{profile.name}: scheduler {profile.scheduler}, up to {profile.nodes} node(s) "
                         f"of {per_node}, mpi {profile.mpi}, engine {profile.engine}")


def _profile_file(profile) -> str:
    return str(profile.source) if profile.source else f"the {profile.name} profile"


def check_venv(profile) -> list[Check]:
    """The profile's ``venv:`` (what the batch script sources) exists."""
    if not profile.venv:
        return []
    from larsctl.config.env import expand_path, variables_in

    expanded = expand_path(profile.venv)
    unset = sorted(variables_in(expanded))
    if unset:
        return [fail("venv", f"{profile.venv}: {', '.join('$' + v for v in unset)} not set here",
                     f"export {unset[0]}=... (the job's environment must set it too), or write the "
                     f"venv path out in {_profile_file(profile)}")]
    activate = Path(expanded) / "bin" / "activate"
    if not activate.is_file():
        return [fail("venv", f"{expanded}: no bin/activate (not a virtual environment)",
                     f"create it: {profile.python} -m venv {expanded} && {expanded}/bin/pip install -e "
                     f"{_repo()}, or fix venv: in {_profile_file(profile)}")]
    return [ok("venv", f"{expanded} (sourced before the probe, as the job does)")]


def check_container(profile) -> list[Check]:
    if not profile.container:
        return []
    from larsctl.config.env import expand_path
    from larsctl.schedulers.launch import value_of

    image = expand_path(profile.container.image)
    rows = []
    if not Path(image).exists():
        rows.append(fail("container image", f"{image}: not found",
                         f"build or copy the image there (e.g. {value_of(profile.container.runtime)} "
                         f"pull), or fix container.image in {_profile_file(profile)}"))
    else:
        rows.append(ok("container image", f"{image} (the Python checks ran inside it)"))
    return rows


def check_modules(profile, probe: "Probe") -> list[Check]:
    if not profile.modules:
        return []
    names = ", ".join(profile.modules)
    if probe.modules_state == "missing":
        return [warn("modules", f"no `module` command here: {names} could not be loaded; the checks "
                                "below ran without them",
                     "run larsctl doctor on the cluster's login node, where `module` (Lmod or "
                     "Environment Modules) exists")]
    if probe.modules_failed:
        return [fail("modules", f"module load failed for {', '.join(probe.modules_failed)}"
                                + (f": {probe.modules_log}" if probe.modules_log else ""),
                     f"check the names with `module avail` and fix modules: in {_profile_file(profile)}")]
    if probe.modules_state == "loaded":
        return [ok("modules", f"loaded {names}")]
    return [warn("modules", f"{names}: not checked (the probe did not run)",
                 "see the rows below")]


# --- the launch line -------------------------------------------------------------------

@dataclass(frozen=True)
class Launchers:
    """What the profile's launch line runs: executables on PATH and ``python -m`` modules."""

    executables: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    line: str = ""
    error: str = ""


def launchers_for(profile, plan, job_dir: Path) -> Launchers:
    """Read the launchers off the line ``build_launch`` writes for ``plan`` on ``profile``."""
    from larsctl.schedulers.launch import LaunchError, build_launch, container_prefix

    try:
        launch = build_launch(profile, plan, job_dir, job_id="doctor")
    except LaunchError as exc:
        return Launchers(error=str(exc))
    words = [str(w) for w in launch.words]
    executables: list[str] = []
    if words and words[0] != profile.python:
        executables.append(words[0])
    box = container_prefix(profile)
    if box and str(box[0]) not in executables:
        executables.append(str(box[0]))
    modules = [words[i + 2] for i in range(len(words) - 2)
               if words[i] == profile.python and words[i + 1] == "-m" and words[i + 2] != "trainer"]
    return Launchers(tuple(executables), tuple(dict.fromkeys(modules)), launch.line)


@dataclass(frozen=True)
class Layout:
    """The part of a plan ``build_launch`` reads: ranks and nodes."""

    nodes: int
    gpus_per_node: int

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def default_layout(profile) -> Layout:
    """Without a recipe: full nodes, two when the profile has several (the multi-node launch line)."""
    return Layout(nodes=min(profile.nodes, 2), gpus_per_node=profile.gpus_per_node)


def flavour_of(version_text: str) -> str | None:
    """The MPI a launcher belongs to, from its ``--version`` output."""
    text = version_text or ""
    if "Intel(R) MPI Library" in text:
        return "intelmpi"
    if "MVAPICH2" in text.upper():
        return "mvapich2"
    if "Open MPI" in text or "(OpenRTE)" in text or "(Open MPI)" in text:
        return "openmpi"
    if "HYDRA build details" in text:
        return "mpich"
    return None


_FLAVOUR_NAMES = {"openmpi": "Open MPI", "mpich": "MPICH (Hydra)", "intelmpi": "Intel MPI",
                  "mvapich2": "MVAPICH2"}
_INSTALL_HINT = {
    "mpirun": "install Open MPI (Debian: apt-get install openmpi-bin) or `module load openmpi`",
    "mpiexec": "load the MPI that provides Hydra's mpiexec (e.g. `module load mpich`, "
               "`module load intel-mpi`, `module load mvapich2`)",
    "srun": "run larsctl on a Slurm login node (srun comes with Slurm's client commands) or "
            "`module load slurm`",
}


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def check_launchers(profile, launchers: Launchers, probe: "Probe") -> list[Check]:
    from larsctl.schedulers.launch import value_of

    mpi = profile.mpi
    if launchers.error:
        return [fail("launcher", launchers.error,
                     f"pick an mpi flavour this scheduler can launch in {_profile_file(profile)}")]
    rows = []
    where = probe.where()
    for name in launchers.executables:
        tool = probe.tools.get(name, {})
        row = f"launcher {name}"
        if not tool.get("path"):
            hint = _INSTALL_HINT.get(name, f"install {name} or load the module that provides it")
            role = ("runs the job's container" if launchers.executables.index(name) > 0 or
                    (profile.container and name == value_of(profile.container.runtime))
                    else "the launch line starts with it")
            rows.append(fail(row, f"{name} not on PATH{where}; {role}", hint))
            continue
        path, version = tool["path"], tool.get("version", "")
        if name in ("mpirun", "mpiexec"):
            rows.append(_mpi_flavour_row(row, name, path, version, mpi))
        elif name == "srun":
            rows.append(_srun_row(row, path, tool, mpi))
        else:  # the container runtime the trainer (or its launcher) runs in
            rows.append(ok(row, f"{path}: {_first_line(version) or 'found'}"))
    for module in launchers.modules:
        short = LAUNCHER_MODULES.get(module, module)
        row = f"launcher {short}"
        found = probe.data.get("modules", {}).get(module) if probe.data else None
        if not probe.data:
            rows.append(fail(row, f"not checked: {probe.error}", "see the python row"))
        elif found:
            rows.append(ok(row, f"{probe.python_label} -m {module} ({found})"))
        else:
            package = module.split(".")[0]
            rows.append(fail(row, f"{probe.python_label} -m {module}: no such module{where}",
                             f"install {package} in the job's environment"))
    return rows


def _mpi_flavour_row(row: str, name: str, path: str, version: str, mpi: str) -> Check:
    flavour = flavour_of(version)
    shown = f"{path}: {_first_line(version) or 'no --version output'}"
    wanted = "Open MPI" if mpi == "openmpi" else _FLAVOUR_NAMES.get(mpi, mpi)
    if flavour == mpi:
        return ok(row, f"{shown} ({_FLAVOUR_NAMES[flavour]}, as mpi {mpi} wants)")
    if flavour is None:
        return warn(row, f"{shown}: cannot tell its MPI from --version (mpi {mpi} wants {wanted})",
                    f"make sure `{name}` is {wanted}'s: `module load` it first")
    hydra_ok = {"mvapich2": ("mpich",), "mpich": ("intelmpi", "mvapich2"), "intelmpi": ("mpich",)}
    if flavour in hydra_ok.get(mpi, ()):
        return warn(row, f"{shown}: {_FLAVOUR_NAMES[flavour]}, not {wanted} (mpi {mpi}); Hydra's "
                         "options are the same, but Horovod must be built against this MPI",
                    f"load {wanted} (`module load ...`) or set mpi: {flavour} in the profile")
    return fail(row, f"{shown}: {_FLAVOUR_NAMES[flavour]}, but mpi {mpi} launches with {wanted}'s "
                     f"{name} (its options differ)",
                f"put {wanted}'s {name} first on PATH (`module load ...`), or set mpi: {flavour} "
                "in the profile")


def _srun_row(row: str, path: str, tool: dict, mpi: str) -> Check:
    if mpi != "srun-pmix":
        return ok(row, f"{path} (starts one torchrun per node)")
    listing = tool.get("mpi_list", "")
    plugins = re.findall(r"^\s+(\S+)\s*$", listing, re.M)
    if "MPI plugin types" not in listing:
        return warn(row, f"{path}: `srun --mpi=list` did not answer: {_last_line(listing) or 'no output'}",
                    "run on the cluster's login node (srun needs the cluster's slurm.conf)")
    if "pmix" in plugins or any(p.startswith("pmix") for p in plugins):
        return ok(row, f"{path}: --mpi=pmix offered (plugins: {', '.join(plugins)})")
    return fail(row, f"{path}: no pmix in `srun --mpi=list` ({', '.join(plugins) or 'none'})",
                "ask the admins for Slurm's PMIx plugin, or use mpi: openmpi (mpirun reads the "
                "Slurm allocation)")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- the probe -------------------------------------------------------------------------

# Runs in the job's interpreter (any Python >= 3.6): standard library at the top, every
# other import guarded, one JSON line after MARKER on stdout.
PROBE_SOURCE = r'''
import glob, json, os, pathlib, platform, sys
import importlib, importlib.util


def why(exc):
    text = " ".join(str(exc).split())
    return (type(exc).__name__ + (": " + text if text else ""))[:400]


def spec_origin(name):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        return None
    if spec is None:
        return None
    return spec.origin or (list(spec.submodule_search_locations or []) or [name])[0]


def dist_version(name):
    try:
        import importlib.metadata as md
        return md.version(name)
    except Exception:
        return None


def probe_python():
    return {"version": platform.python_version(), "executable": sys.executable, "prefix": sys.prefix,
            "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix)}


def probe_trainer():
    try:
        import trainer
        return {"path": os.path.dirname(os.path.abspath(trainer.__file__))}
    except Exception as exc:
        return {"error": why(exc)}


def probe_torch():
    try:
        import torch
    except Exception as exc:
        return None, {"error": why(exc)}
    info = {"version": torch.__version__, "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None), "devices": [],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                info["devices"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    except Exception as exc:
        info["devices_error"] = why(exc)
    try:
        import torch.distributed as dist
        up = dist.is_available()
        info["dist"] = {"available": up, "gloo": up and dist.is_gloo_available(),
                        "nccl": up and dist.is_nccl_available(), "mpi": up and dist.is_mpi_available()}
    except Exception as exc:
        info["dist"] = {"error": why(exc)}
    return torch, info


def probe_torchvision(torch):
    # Its version, and its C++ ops library loaded into this torch the way torchvision.extension
    # does (importing torchvision whole costs seconds: it imports torch._dynamo).
    where = spec_origin("torchvision")
    if where is None:
        return {"error": "not installed"}
    info = {"version": dist_version("torchvision"), "path": os.path.dirname(where)}
    libs = sorted(glob.glob(os.path.join(os.path.dirname(where), "_C*.so")))
    if torch is not None and libs:
        try:
            torch.ops.load_library(libs[0])
            info["ops"] = os.path.basename(libs[0])
        except Exception as exc:
            info["ops_error"] = why(exc)
    return info


def probe_dali():
    info = {"dists": []}
    try:
        import importlib.metadata as md
        for d in md.distributions():
            name = d.metadata["Name"] or ""
            if name.lower().replace("_", "-").startswith("nvidia-dali"):
                info["dists"].append([name, d.version])
    except Exception:
        pass
    try:
        import nvidia.dali
        info["version"] = nvidia.dali.__version__
        try:
            import nvidia.dali.backend as backend
            info["cuda_version"] = getattr(backend, "__cuda_version__", None)
        except Exception:
            pass
    except Exception as exc:
        info["error"] = why(exc)
    return info


def probe_horovod():
    info = {}
    try:
        import horovod
        info["version"] = horovod.__version__
    except Exception as exc:
        return {"error": why(exc)}
    try:
        import horovod.torch as hvd
        info.update(torch=True, mpi=bool(hvd.mpi_built()), gloo=bool(hvd.gloo_built()),
                    nccl=int(hvd.nccl_built() or 0), cuda=bool(hvd.cuda_built()))
    except Exception as exc:
        info["torch_error"] = why(exc)
    return info


def probe_imagefolder(data):
    # The trainer's own checks: what it would raise at start.
    from trainer.data.errors import DataError
    from trainer.data.imagefolder import check_same_classes, scan_folder
    result, found = {}, {}
    for field in ("train_dir", "val_dir"):
        try:
            folder = scan_folder(data.get(field), field)
            found[field] = folder
            result[field] = {"path": data.get(field), "classes": len(folder.classes),
                             "images": len(folder.samples)}
        except DataError as exc:
            result[field] = {"path": data.get(field), "error": str(exc)}
    if len(found) == 2:
        try:
            check_same_classes(found["train_dir"], found["val_dir"], data["train_dir"], data["val_dir"])
            result["classes"] = {"same": True}
        except DataError as exc:
            result["classes"] = {"error": str(exc)}
    return result


def probe_tfrecords(data):
    # The layout trainer.data.dali.find_split reads, without its side effect of writing
    # missing index files (the trainer makes them; doctor only looks).
    from trainer.data.errors import DataError
    from trainer.data.tfrecord import count_indexed, record_files
    root = data.get("data_dir")
    if not root or not os.path.isdir(root):
        return {"error": "%s: data_dir not found (expected train/, validation/ and idx_files/)" % root}
    result = {}
    for split in ("train", "validation"):
        try:
            records = record_files(pathlib.Path(root, split))
        except DataError as exc:
            result[split] = {"error": str(exc)}
            continue
        index_dir = os.path.join(root, "idx_files", split)
        have = [os.path.join(index_dir, r.name) for r in records if os.path.isfile(os.path.join(index_dir, r.name))]
        missing = [r.name for r in records if not os.path.isfile(os.path.join(index_dir, r.name))]
        parent = index_dir
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        result[split] = {"shards": len(records), "indexed": len(have), "missing": missing[:3],
                         "missing_count": len(missing), "index_dir": index_dir,
                         "records": count_indexed(have) if have else 0,
                         "index_dir_writable": os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)}
    return result


def main():
    request = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    sections = request.get("sections", ["stack", "horovod"])
    out = {"python": probe_python(), "trainer": probe_trainer()}
    if "stack" in sections:
        torch, out["torch"] = probe_torch()
        out["torchvision"] = probe_torchvision(torch)
        out["dali"] = probe_dali()
    if "horovod" in sections:
        out["horovod"] = probe_horovod()
    out["modules"] = dict((m, spec_origin(m)) for m in request.get("modules", []))
    data = request.get("data")
    if data:
        try:
            out["data"] = probe_imagefolder(data) if data["kind"] == "imagefolder" else probe_tfrecords(data)
        except Exception as exc:
            out["data"] = {"probe_error": why(exc)}
    sys.stdout.write("\n" + MARKER + json.dumps(out) + "\n")
    sys.stdout.flush()


main()
'''.replace("MARKER", repr(MARKER))


@dataclass
class Probe:
    """What the probe shell found: launcher tools, module loads, and the Python side (``data``)."""

    python_label: str = "python"
    data: dict = field(default_factory=dict)     # the probe's JSON; {} when it did not run
    tools: dict = field(default_factory=dict)    # name -> {"path", "version", "mpi_list"}
    modules_state: str = ""                      # "loaded", "missing" or "" (no modules)
    modules_failed: list = field(default_factory=list)
    modules_log: str = ""
    error: str = ""                              # why there is no JSON
    context: str = ""                            # "after module load ..., venv ..." (how it ran)

    def where(self) -> str:
        """`` (after module load ..., venv ...)`` for messages, or ''."""
        return f" ({self.context})" if self.context else ""


def probe_script(profile, tools: tuple[str, ...], srun_list: bool) -> str:
    """The bash the probe runs: the job's set-up lines, the tool look-ups, then the probe."""
    from larsctl.schedulers.launch import Shell, container_prefix, join, setup_lines

    lines = ['out="$LARSCTL_DOCTOR_OUT"',
             # A login shell's profile may reset PATH; the job inherits the submitter's.
             'PATH="$LARSCTL_DOCTOR_PATH"; export PATH']
    if profile.modules:
        names = " ".join(shlex.quote(m) for m in profile.modules)
        lines += ["if type module >/dev/null 2>&1; then",
                  '  echo loaded > "$out/modules"',
                  f"  for larsctl_m in {names}; do",
                  '    module load "$larsctl_m" >> "$out/modules.log" 2>&1 || '
                  'printf "%s\\n" "$larsctl_m" >> "$out/modules.failed"',
                  "  done",
                  "else",
                  '  echo missing > "$out/modules"',
                  "fi"]
    lines += [line for line in setup_lines(profile) if not line.startswith("module load ")]
    if profile.scheduler == "local" and not profile.venv:
        lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
    lines += ['larsctl_run() { if command -v timeout >/dev/null 2>&1; then timeout 10 "$@"; else "$@"; fi; }']
    for i, tool in enumerate(tools):
        q = shlex.quote(tool)
        lines += [f'if command -v {q} > "$out/tool{i}.path" 2>/dev/null; then',
                  f'  larsctl_run {q} --version > "$out/tool{i}.version" 2>&1 < /dev/null',
                  *([f'  larsctl_run {q} --mpi=list > "$out/tool{i}.mpi" 2>&1 < /dev/null']
                    if tool == "srun" and srun_list else []),
                  "fi"]
    probe = [*container_prefix(profile), profile.python, "-c", Shell('"$LARSCTL_DOCTOR_PROBE"'),
             Shell('"$LARSCTL_DOCTOR_REQUEST"')]
    lines.append("exec " + join(probe))
    return "\n".join(lines) + "\n"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class ProbeRun:
    """The probe process, started now and collected later (the other checks run meanwhile)."""

    def __init__(self, profile, tools: tuple[str, ...], request: dict):
        self.profile, self.tools = profile, tools
        self.tmp = tempfile.TemporaryDirectory(prefix="larsctl-doctor-")
        script = probe_script(profile, tools, srun_list=profile.mpi == "srun-pmix")
        env = dict(os.environ, LARSCTL_DOCTOR_OUT=self.tmp.name,
                   LARSCTL_DOCTOR_PATH=os.environ.get("PATH", os.defpath),
                   LARSCTL_DOCTOR_PROBE=PROBE_SOURCE, LARSCTL_DOCTOR_REQUEST=json.dumps(request))
        bash = shutil.which("bash") or "/bin/bash"
        argv = [bash, "-lc" if profile.modules else "-c", script]
        self.start_error = ""
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=env, cwd=self.tmp.name,
                                         start_new_session=True)
        except OSError as exc:
            self.proc, self.start_error = None, f"cannot run {bash}: {exc.strerror or exc}"

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: bash and the probe
        except ProcessLookupError:
            pass

    def result(self, timeout: float = PROBE_TIMEOUT_S) -> Probe:
        probe = Probe(python_label=self.profile.python)
        stdout = stderr = ""
        if self.proc is None:
            probe.error = self.start_error
        else:
            try:
                stdout, stderr = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                stdout, stderr = self.proc.communicate()
                probe.error = f"the probe did not finish in {timeout:.0f} s"
            except BaseException:  # Ctrl-C: leave no probe behind
                self._kill()
                self.tmp.cleanup()
                raise
        out = Path(self.tmp.name)
        probe.modules_state = _read(out / "modules").strip()
        probe.modules_failed = _read(out / "modules.failed").split()
        probe.modules_log = _last_line(_read(out / "modules.log"))
        for i, tool in enumerate(self.tools):
            path = _read(out / f"tool{i}.path").strip()
            probe.tools[tool] = {"path": path.splitlines()[-1] if path else "",
                                 "version": _read(out / f"tool{i}.version"),
                                 "mpi_list": _read(out / f"tool{i}.mpi")}
        for line in stdout.splitlines():
            if line.startswith(MARKER):
                try:
                    probe.data = json.loads(line[len(MARKER):])
                except ValueError:
                    pass
        probe.context = _context(self.profile, probe)
        if not probe.data and not probe.error:
            tail = _last_line(stderr) or _last_line(stdout) or "no output"
            code = self.proc.returncode
            probe.error = f"`{self.profile.python}` exited {code}: {tail}"
            if code in (126, 127) or "not found" in tail:
                probe.error = f"`{self.profile.python}` did not start here{probe.where()}: {tail}"
        self.tmp.cleanup()
        return probe


def _context(profile, probe: Probe) -> str:
    """How the probe's environment was made, as far as it worked (for the rows' wording)."""
    from larsctl.config.env import expand_path
    from larsctl.schedulers.launch import value_of

    parts = []
    if profile.modules:
        loaded = probe.modules_state == "loaded" and not probe.modules_failed
        parts.append(f"after module load {' '.join(profile.modules)}" if loaded
                     else "without the profile's modules")
    if profile.venv:
        prefix = (probe.data.get("python") or {}).get("prefix")
        active = prefix is not None and os.path.realpath(prefix) == os.path.realpath(expand_path(profile.venv))
        parts.append(f"venv {profile.venv}" if active else f"venv {profile.venv} not active")
    if profile.container:
        parts.append(f"in the {value_of(profile.container.runtime)} container")
    return ", ".join(parts)


# --- the Python side -------------------------------------------------------------------

def _repo() -> Path:
    import larsctl

    return Path(larsctl.__file__).resolve().parent.parent


def _needs_gpu(profile) -> bool:
    return profile.gpu_type != "cpu"


def check_python_side(profile, probe: Probe, data_kind: str | None, recipe_given: bool) -> list[Check]:
    """Rows for python, trainer, torch, GPUs, torchvision, DALI and Horovod from the probe."""
    d = probe.data
    if not d:
        return [fail("python", probe.error or "the probe printed nothing",
                     f"check python: ({profile.python}) and venv:/modules: in {_profile_file(profile)}")]
    rows = [_python_row(profile, d["python"], probe), _trainer_row(profile, d["trainer"])]
    rows += _torch_rows(profile, d["torch"])
    rows.append(_torchvision_row(d.get("torchvision", {}), d["torch"]))
    rows.append(_dali_row(profile, d.get("dali", {}), data_kind, recipe_given))
    if profile.engine == "ddp":
        rows.append(ok("horovod", "not needed: engine ddp uses torch.distributed (torchrun)"))
        rows.append(_ddp_row(profile, d["torch"]))
    else:
        rows += _horovod_rows(profile, d.get("horovod", {}))
    return rows


def _python_row(profile, info: dict, probe: Probe) -> Check:
    version = info["version"]
    where = info["executable"] + (" in a venv" if info.get("venv") else "")
    major_minor = tuple(int(x) for x in version.split(".")[:2])
    if major_minor < MIN_PYTHON:
        return fail("python", f"{version} at {where}: larsctl's trainer needs Python "
                              f">= {'.'.join(map(str, MIN_PYTHON))}",
                    f"point python:/venv: in {_profile_file(profile)} at a newer Python")
    notes = [f"`{profile.python}`" + (f" {probe.context}" if probe.context else "")]
    if info.get("prefix") == sys.prefix and info["executable"] == sys.executable:
        notes.append("larsctl's own interpreter")
    found = f"{version}: {where} ({'; '.join(notes)})"
    if "not active" in probe.context:
        return warn("python", f"{found}: not the job's interpreter", "see the venv row")
    return ok("python", found)


def _trainer_row(profile, info: dict) -> Check:
    if "error" in info:
        return fail("trainer", f"`import trainer` fails in the job's Python: {info['error']}",
                    f"install larsctl (which ships the trainer) there: {profile.python} -m pip install "
                    f"-e {_repo()}")
    return ok("trainer", f"importable from {info['path']}")


def _torch_rows(profile, info: dict) -> list[Check]:
    if "error" in info:
        return [fail("torch", f"not importable: {info['error']}",
                     f"install torch in the job's environment ({profile.python} -m pip install torch)")]
    build = (f"CUDA {info['cuda']} build" if info.get("cuda") else
             f"ROCm {info['hip']} build" if info.get("hip") else "CPU-only build")
    rows = []
    if _needs_gpu(profile) and not (info.get("cuda") or info.get("hip")):
        rows.append(fail("torch", f"{info['version']}, {build}: gpu_type {profile.gpu_type} needs a CUDA "
                                  "build", "install a CUDA build of torch in the job's environment "
                                           "(pytorch.org/get-started)"))
    else:
        rows.append(ok("torch", f"{info['version']}, {build}"))
    devices = info.get("devices", [])
    shown = ", ".join(f"{d['name']} ({d['memory_gib']:g} GiB)" for d in devices)
    if not _needs_gpu(profile):
        rows.append(ok("gpus", (f"{len(devices)} visible ({shown}), unused" if devices else "none visible")
                       + ": gpu_type cpu runs CPU workers"))
        return rows
    if not devices:
        why = f" ({info['devices_error']})" if info.get("devices_error") else ""
        visible = info.get("cuda_visible_devices")
        why += f" CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        rows.append(warn("gpus", f"no GPU visible on this machine{why}; the job needs "
                                 f"{profile.gpus_per_node} {profile.gpu_type} per node",
                         "login nodes often have none: run doctor on a compute node, e.g. "
                         + _interactive_hint(profile)))
        return rows
    model = profile.gpu_type.split("-")[0]
    if not any(model in d["name"] for d in devices):
        rows.append(warn("gpus", f"{len(devices)} visible: {shown}; the profile says {profile.gpu_type}",
                         f"set gpu_type in {_profile_file(profile)} to this node's GPU (the planner's "
                         "per-GPU batch follows its memory), or run doctor on a node of this profile"))
    else:
        rows.append(ok("gpus", f"{len(devices)} visible: {shown} (profile: {profile.gpus_per_node} x "
                               f"{profile.gpu_type} per node)"))
    return rows


def _interactive_hint(profile) -> str:
    if profile.scheduler == "slurm":
        part = f" --partition {profile.partition}" if profile.partition else ""
        return f"srun{part} --gres=gpu:1 --pty larsctl doctor --cluster {profile.name}"
    if profile.scheduler == "pbs":
        queue = f" -q {profile.partition}" if profile.partition else ""
        return f"qsub -I{queue} -l select=1:ngpus=1, then larsctl doctor --cluster {profile.name}"
    return f"larsctl doctor --cluster {profile.name} on a machine with the GPUs"


def _torchvision_row(info: dict, torch_info: dict) -> Check:
    if "error" in info:
        return fail("torchvision", info["error"], "install torchvision (the release that matches torch) "
                                                  "in the job's environment")
    version = info.get("version") or "?"
    if "ops_error" in info:
        return warn("torchvision", f"{version}: its C++ ops do not load with torch "
                                   f"{torch_info.get('version', '?')} ({info['ops_error']})",
                    "install the torchvision release built for this torch")
    ops = f", C++ ops load ({info['ops']})" if info.get("ops") else ""
    return ok("torchvision", f"{version}{ops}")


def _dali_row(profile, info: dict, data_kind: str | None, recipe_given: bool) -> Check:
    needed = data_kind == "dali"
    why = ("the recipe reads TFRecords with DALI (data: dali)" if needed else
           f"not needed by this recipe (data {data_kind})" if recipe_given else
           "needed only by recipes with data: dali")
    dists = info.get("dists", [])
    variant = dists[0][0] if dists else "nvidia-dali"
    if "error" in info or "version" not in info:
        found = f"not importable ({info.get('error', 'not installed')})"
        fix = "pip install nvidia-dali-cuda120 (or the variant for your CUDA) in the job's environment"
        if needed:
            return fail("dali", f"{found}; {why}", fix)
        if recipe_given:
            return ok("dali", f"{found}; {why}")
        return warn("dali", f"{found}; {why}", fix)
    match = re.search(r"cuda(\d+)", variant)
    cuda = info.get("cuda_version")
    if match:
        major, minor = match.group(1)[:-1], match.group(1)[-1]
        kind = f"CUDA {major}.{minor} variant"
    elif cuda and "cpu" not in variant.lower():
        kind = f"CUDA variant ({cuda})"
    else:
        kind = "CPU-only variant"
    found = f"{info['version']} ({variant}: {kind}); {why}"
    if _needs_gpu(profile) and kind == "CPU-only variant":
        message = (f"{found}; gpu_type {profile.gpu_type} decodes on the GPU (DALI 'mixed'), which the "
                   "CPU-only variant lacks")
        fix = "pip install nvidia-dali-cuda120 (the variant for your CUDA) instead"
        return fail("dali", message, fix) if needed else warn("dali", message, fix)
    return ok("dali", found)


def _horovod_rows(profile, info: dict) -> list[Check]:
    build = ("rebuild Horovod in the job's environment: .ci/build-horovod.sh VENV WHEEL_DIR "
             "(builds against its torch and the MPI on PATH)")
    if "error" in info or not info:
        return [fail("horovod", f"not importable: {info.get('error', 'not checked')} (engine horovod "
                                "needs it)", build)]
    if "torch_error" in info:
        return [fail("horovod", f"{info['version']}, but horovod.torch fails: {info['torch_error']} "
                                "(built for another torch, or without PyTorch)", build)]
    rows = [ok("horovod", f"{info['version']}, built with PyTorch (horovod.torch imports)")]
    have = {"MPI": info.get("mpi"), "Gloo": info.get("gloo"), "NCCL": bool(info.get("nccl"))}
    built = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in have.items())
    need = "MPI" if profile.mpi in MPI_FLAVOURS else "Gloo"
    needs = f"mpi {profile.mpi} needs {need}"
    if _needs_gpu(profile):
        needs += f"; gpu_type {profile.gpu_type} wants NCCL"
    else:
        needs += "; gpu_type cpu needs no NCCL"
    if not have[need]:
        how = ("with the cluster's MPI loaded (mpicc on PATH; HOROVOD_WITH_MPI=1)" if need == "MPI"
               else "with Gloo (HOROVOD_WITH_GLOO=1; needs cmake)")
        rows.append(fail("horovod ops", f"{built}: {needs}",
                         f"rebuild Horovod {how}: .ci/build-horovod.sh VENV WHEEL_DIR"))
    elif _needs_gpu(profile) and not have["NCCL"]:
        rows.append(warn("horovod ops", f"{built}: {needs}; without NCCL, GPU gradients are copied to host "
                                        f"memory and allreduced by {need} (much slower)",
                         "rebuild Horovod where CUDA and NCCL are present (.ci/build-horovod.sh then "
                         "sets HOROVOD_GPU_OPERATIONS=NCCL)"))
    else:
        rows.append(ok("horovod ops", f"{built}: {needs}"))
    return rows


def _ddp_row(profile, info: dict) -> Check:
    dist = info.get("dist") or {}
    if "error" in info or "error" in dist or not dist.get("available"):
        return fail("torch.distributed", f"not available: {dist.get('error') or info.get('error') or 'no'}",
                    "install a torch build with distributed support")
    backend = "nccl" if _needs_gpu(profile) else "gloo"
    built = ", ".join(f"{b} {'yes' if dist.get(b) else 'no'}" for b in ("gloo", "nccl", "mpi"))
    if not dist.get(backend):
        return fail("torch.distributed", f"{built}: the trainer's ddp engine uses {backend} on gpu_type "
                                         f"{profile.gpu_type}", f"install a torch build with {backend}")
    return ok("torch.distributed", f"{built}: the ddp engine uses {backend}")


# --- scheduler -------------------------------------------------------------------------

def _run(argv: list[str], timeout: float = SCHEDULER_TIMEOUT_S) -> tuple[int | None, str]:
    """(exit status or None on timeout/not runnable, output)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout:.0f} s"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    return r.returncode, r.stdout + ("\n" if r.stdout and r.stderr else "") + r.stderr


def check_commands(kind: str, commands: tuple[str, ...]) -> Check:
    found = {c: shutil.which(c) for c in commands}
    missing = [c for c, p in found.items() if not p]
    if missing:
        have = [c for c, p in found.items() if p]
        return fail(f"{kind} commands", f"not on PATH: {', '.join(missing)}"
                                        + (f" (found {', '.join(have)})" if have else ""),
                    f"run larsctl on the cluster's login node, or `module load {kind}` first")
    dirs = sorted({str(Path(p).parent) for p in found.values()})
    return ok(f"{kind} commands", f"{', '.join(commands)} in {', '.join(dirs)}")


def check_slurm(profile) -> list[Check]:
    rows = [check_commands("slurm", SLURM_COMMANDS)]
    if shutil.which("sinfo"):
        code, text = _run(["sinfo", "--noheader", "--format=%P|%a"])
    elif shutil.which("squeue"):
        code, text = _run(["squeue", "--noheader", "--me"])
    else:
        return rows
    if code != 0:
        rows.append(fail("slurm controller", f"does not answer: {_last_line(text) or f'exit {code}'}",
                         "check `scontrol ping`; on a login node SLURM_CONF (or the configless set-up) "
                         "must point at this cluster"))
        return rows
    partitions = {}
    for line in text.splitlines():
        name, _, state = line.strip().partition("|")
        if name:
            partitions[name] = state
    listing = ", ".join(f"{p} ({s})" for p, s in partitions.items()) or "none"
    rows.append(ok("slurm controller", f"answers (sinfo): partitions {listing}"
                   if partitions else "answers (squeue)"))
    if partitions:
        names = {p.rstrip("*"): s for p, s in partitions.items()}
        wanted = profile.partition
        if wanted is None:
            default = [p.rstrip("*") for p in partitions if p.endswith("*")]
            rows.append(ok("slurm partition", f"none set: jobs go to the default partition "
                                              f"{default[0] if default else '(none marked)'}"))
        elif wanted not in names:
            rows.append(fail("slurm partition", f"{wanted!r} is not a partition here (have: "
                                                f"{', '.join(names)})",
                             f"set partition: in {_profile_file(profile)} to one of {', '.join(names)}"))
        elif names[wanted] != "up":
            rows.append(warn("slurm partition", f"{wanted} is {names[wanted]}",
                             "jobs queue until it is up again (sinfo -p " + wanted + ")"))
        else:
            rows.append(ok("slurm partition", f"{wanted} (up)"))
    return rows


def check_pbs(profile) -> list[Check]:
    rows = [check_commands("pbs", PBS_COMMANDS)]
    if not shutil.which("qstat"):
        return rows
    code, text = _run(["qstat", "-B"])
    what = "qstat -B"
    if code != 0:  # Torque-compatible clients (e.g. Slurm's) may lack -B; queues answer too
        code2, text2 = _run(["qstat", "-Q"])
        if code2 == 0:
            code, text, what = code2, text2, "qstat -Q"
    if code != 0:
        rows.append(fail("pbs server", f"does not answer ({what}): {_last_line(text) or f'exit {code}'}",
                         "check that the PBS server runs (qstat -B) and PBS_SERVER / pbs.conf point at it"))
        return rows
    rows.append(ok("pbs server", f"answers ({what})"))
    if profile.partition:
        code, text = _run(["qstat", "-Q"])
        queues = _pbs_queues(text) if code == 0 else []
        if code != 0:
            rows.append(warn("pbs queue", f"cannot list queues: {_last_line(text)}",
                             f"check `qstat -Q {profile.partition}` by hand"))
        elif profile.partition not in queues:
            rows.append(fail("pbs queue", f"{profile.partition!r} is not a queue here (have: "
                                          f"{', '.join(queues) or 'none'})",
                             f"set partition: in {_profile_file(profile)} to one of {', '.join(queues)}"))
        else:
            rows.append(ok("pbs queue", profile.partition))
    return rows


def _pbs_queues(text: str) -> list[str]:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("---"):
            return [row.split()[0] for row in lines[i + 1:] if row.strip()]
    return []


def check_scheduler(profile) -> list[Check]:
    if profile.scheduler == "slurm":
        return check_slurm(profile)
    if profile.scheduler == "pbs":
        return check_pbs(profile)
    return [ok("scheduler", "local: jobs run on this machine as detached bash processes; no scheduler "
                            "to ask")]


# --- workdir ---------------------------------------------------------------------------

def _unescape_mount(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def filesystem_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) holding ``path``, from /proc/mounts (("", "") if unknown)."""
    real = os.path.realpath(path)
    best = ("", "")
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount, fstype = _unescape_mount(parts[1]), parts[2]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[0]):
                    best = (mount, fstype)
    except OSError:
        pass
    return best


def _writable(directory: Path) -> str:
    """'' when a file can be created in ``directory`` (really tried), else why not."""
    try:
        fd, name = tempfile.mkstemp(prefix=".larsctl-doctor-", dir=directory)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return ""


def check_workdir(profile, nodes: int) -> Check:
    """The job directories' parent exists (or can be created) and is writable; shared if multi-node."""
    from larsctl.config.env import variables_in

    path = profile.expanded_workdir()
    source = _profile_file(profile)
    unset = sorted(variables_in(str(path)))
    if unset:
        names = ", ".join("$" + v for v in unset)
        return fail("workdir", f"{profile.workdir}: {names} not set here",
                    f"export {unset[0]}=... before running larsctl, or write the path out in workdir: "
                    f"of {source}")
    path = path if path.is_absolute() else Path.cwd() / path
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return fail("workdir", f"{path}: cannot be created: {existing} is a file, not a directory",
                    f"set workdir: in {source} to a writable directory")
    problem = _writable(existing)
    if problem:
        what = "not writable" if existing == path else f"cannot be created: {existing} is not writable"
        return fail("workdir", f"{path}: {what} ({problem})",
                    f"set workdir: in {source} to a directory you can write, or fix its permissions")
    mount, fstype = filesystem_of(existing)
    state = "exists, writable" if existing == path else f"will be created (under {existing}, writable)"
    found = f"{path}: {state}; {fstype or 'unknown'} filesystem" + (f" at {mount}" if mount else "")
    real = os.path.realpath(existing)
    local_dir = any(real == d or real.startswith(d + "/") for d in NODE_LOCAL_DIRS)
    if nodes > 1 and (fstype in NODE_LOCAL_FS or local_dir):
        return warn("workdir", f"{found}: node-local, but jobs span {nodes} nodes (ranks on other nodes "
                               "write logs and checkpoints there too)",
                    f"set workdir: in {source} to a shared filesystem (e.g. $SCRATCH/larsctl)")
    return ok("workdir", found)


# --- recipe ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RecipeResult:
    rows: tuple[Check, ...]
    spec: object = None            # the JobSpec when it planned
    data_kind: str | None = None   # the trainer's data pipeline (None if it did not resolve)
    data_request: dict | None = None  # what the probe must check on disk


def check_recipe(profile, recipe, recipe_path: Path) -> RecipeResult:
    """The recipe plans on this profile, its trainer options resolve, and which data to check."""
    from larsctl.config.env import variables_in
    from larsctl.planning.spec import resolve_job
    from trainer.config import data_kind as trainer_data_kind, resolve as resolve_trainer
    from trainer.errors import BadInput

    try:
        spec = resolve_job(profile, recipe)
    except ValueError as exc:  # PlanError: infeasible here, with the planner's suggestion
        return RecipeResult((fail("recipe", f"{recipe.name} does not plan on {profile.name}: {exc}",
                                  f"follow the suggestion in {recipe_path} (larsctl plan --cluster "
                                  f"{profile.name} --recipe {recipe_path} shows the whole plan)"),))
    plan = spec.plan
    unit = "workers" if profile.gpu_type == "cpu" else "GPUs"
    rows = [ok("recipe", f"{spec.name}: batch {plan.effective_batch} = {plan.gpus} {unit} x "
                         f"{plan.per_gpu_batch} x {plan.batches_per_allreduce} on {plan.nodes} node(s)")]
    try:
        cfg = resolve_trainer(spec.trainer, {}, source=str(recipe_path))
    except BadInput as exc:
        rows.append(fail("trainer options", str(exc), f"fix the trainer: section of {recipe_path}"))
        return RecipeResult(tuple(rows), spec)
    kind = trainer_data_kind(cfg)
    rows.append(ok("trainer options", f"valid for the trainer (data {kind})"))
    data_keys = [k for k in ("train_dir", "val_dir", "data_dir") if spec.trainer.get(k)]
    unset = sorted(set().union(*(variables_in(str(spec.trainer[k])) for k in data_keys)))
    others = sorted(set(spec.unset_variables) - set(unset))
    if others:
        rows.append(fail("recipe paths", f"{', '.join('$' + v for v in others)} not set here (used in the "
                                         "trainer section's log_dir/out_dir/checkpoint_format)",
                         f"export {others[0]}=... before running larsctl (submit expands the paths then)"))
    if cfg.dataset == "digits" and kind != "synthetic":
        from larsctl.config.env import expand_path

        where = expand_path(os.environ.get("LARSCTL_DATA") or "~/.cache/larsctl/datasets")
        rows.append(ok("data", f"builtin digits set: made under $LARSCTL_DATA ({where}) at first use; "
                               "no files needed"))
        return RecipeResult(tuple(rows), spec, kind)
    if kind == "synthetic":
        rows.append(ok("data", "synthetic data: no files needed"))
        return RecipeResult(tuple(rows), spec, kind)
    if unset:
        rows.append(fail("data", f"{', '.join('$' + v for v in unset)} not set here (used in "
                                 f"{', '.join(data_keys)})",
                         f"export {unset[0]}=... before running larsctl (submit expands the paths then)"))
        return RecipeResult(tuple(rows), spec, kind)
    request = {"kind": kind, **{k: spec.trainer.get(k) for k in ("train_dir", "val_dir", "data_dir")}}
    return RecipeResult(tuple(rows), spec, kind, request)


def check_data(request: dict | None, probe: Probe | None) -> list[Check]:
    """Rows for the data directories, from the probe (which used the trainer's own functions)."""
    if not request or probe is None:
        return []
    if not probe.data:
        return [fail("data", f"not checked: {probe.error}", "see the python row")]
    result = probe.data.get("data", {})
    if "probe_error" in result:
        return [fail("data", f"not checked: the trainer's data code fails in the job's Python: "
                             f"{result['probe_error']}", "see the python and trainer rows")]
    if "error" in result:
        return [fail("data", result["error"], "expected the TFRecord layout: data_dir/train/*, "
                                              "data_dir/validation/*, data_dir/idx_files/{train,validation}/*")]
    if request["kind"] == "imagefolder":
        return _imagefolder_rows(result)
    return _dali_data_rows(request, result)


def _imagefolder_rows(result: dict) -> list[Check]:
    rows = []
    for key, row in (("train_dir", "data train"), ("val_dir", "data val")):
        entry = result.get(key, {})
        if "error" in entry:
            rows.append(fail(row, entry["error"],
                             f"point {key} at an ImageFolder tree: {key}/<class>/<image>"))
        else:
            rows.append(ok(row, f"{entry['path']}: {entry['classes']} classes, {entry['images']} images"))
    classes = result.get("classes")
    if classes is not None:
        if "error" in classes:
            rows.append(fail("data classes", classes["error"],
                             "val_dir needs exactly the class folders of train_dir (labels are "
                             "their sorted order)"))
        else:
            rows.append(ok("data classes", "train and val have the same class folders"))
    return rows


def _dali_data_rows(request: dict, result: dict) -> list[Check]:
    rows = []
    root = request.get("data_dir")
    for split in ("train", "validation"):
        entry = result.get(split, {})
        row = f"data {split}"
        if "error" in entry:
            rows.append(fail(row, entry["error"], "expected the TFRecord layout: data_dir/train/*, "
                                                  "data_dir/validation/*, data_dir/idx_files/{train,validation}/*"))
            continue
        found = f"{root}/{split}: {entry['shards']} shard(s)"
        if entry["missing_count"]:
            example = ", ".join(entry["missing"])
            message = (f"{found}; {entry['missing_count']} without an index in {entry['index_dir']} "
                       f"(e.g. {example})")
            make = (f"make them once: for f in {shlex.quote(root)}/{split}/*; do tfrecord2idx \"$f\" "
                    f"{shlex.quote(entry['index_dir'])}/\"$(basename \"$f\")\"; done")
            if entry.get("index_dir_writable"):
                rows.append(warn(row, message + "; every rank would build them at start", make))
            else:
                rows.append(fail(row, message + "; the index directory is not writable", make))
        else:
            rows.append(ok(row, f"{found}, {entry['records']} records, every shard indexed"))
    return rows


# --- everything ------------------------------------------------------------------------

def run_doctor(cluster: str, recipe: str | Path | None = None) -> Report:
    """All checks for ``cluster`` (and ``recipe``) on this machine.

    Raises ProfileError / RecipeError (UserError, exit 2) for bad input; every
    other problem is a FAIL row.
    """
    from larsctl.config.profiles import load_profile
    from larsctl.config.recipes import load_recipe

    started = time.monotonic()
    profile = load_profile(cluster)
    recipe_obj = recipe_path = None
    if recipe is not None:
        recipe_obj, recipe_path = load_recipe(recipe)

    recipe_result = check_recipe(profile, recipe_obj, recipe_path) if recipe_obj else RecipeResult(())
    spec = recipe_result.spec
    plan = spec.plan if spec is not None else default_layout(profile)
    launchers = launchers_for(profile, plan, profile.expanded_workdir() / "doctor")
    sections = ["stack"] + (["horovod"] if profile.engine == "horovod" else [])
    probe_run = ProbeRun(profile, launchers.executables,
                         {"sections": sections, "modules": list(launchers.modules)})
    # The data scan imports torchvision (seconds): a second probe, in parallel.
    data_run = (ProbeRun(profile, (), {"sections": [], "data": recipe_result.data_request})
                if recipe_result.data_request else None)
    try:
        # While the probes import torch: the checks that run from larsctl's own environment.
        scheduler_rows = check_scheduler(profile)
        nodes = plan.nodes if spec is not None else profile.nodes
        workdir_row = check_workdir(profile, nodes)
        venv_rows = check_venv(profile)
    finally:
        probe = probe_run.result()
        data_probe = data_run.result() if data_run else None

    rows: list[Check] = [check_profile(profile)]
    rows += check_modules(profile, probe)
    rows += venv_rows
    rows += check_container(profile)
    rows += check_python_side(profile, probe, recipe_result.data_kind, recipe_obj is not None)
    rows += check_launchers(profile, launchers, probe)
    rows += scheduler_rows
    rows.append(workdir_row)
    rows += recipe_result.rows
    rows += check_data(recipe_result.data_request, data_probe)
    return Report(cluster=profile.name, profile_file=str(profile.source) if profile.source else None,
                  recipe=str(recipe_path) if recipe_path else None, checks=tuple(rows),
                  seconds=time.monotonic() - started)
