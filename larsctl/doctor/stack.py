"""The rows for the job's Python stack, read from the probe: python, trainer, torch and its
GPUs, torchvision, DALI, and the engine (Horovod's build, or torch.distributed's backends)
against what the launch line needs (:class:`~larsctl.doctor.launcher.Needs`).

A section the probe could not collect (its own code failed there) is one warn row.
"""
from __future__ import annotations

import re
import sys

from larsctl.doctor.environment import repo
from larsctl.doctor.launcher import Needs
from larsctl.doctor import probe as probe_module
from larsctl.doctor.report import Check, fail, in_profile, ok, warn
from larsctl.doctor.runner import ProbeResult

MIN_PYTHON = (3, 10)  # pyproject's requires-python


def check_python_side(profile, probe: ProbeResult, needs: Needs, data_kind: str | None,
                      recipe_given: bool) -> list[Check]:
    """Rows for python, trainer, torch, GPUs, torchvision, DALI and the engine from the probe."""
    d = probe.data
    if not d:
        fix = ("give it longer: larsctl doctor --timeout SECONDS" if probe.timed_out else
               in_profile(profile, f"check python: ({profile.python}) and venv:/modules: in {{file}}"))
        return [fail("python", probe.error or "the probe printed nothing", fix)]
    rows = _section("python", d["python"], _python_rows, profile, probe)
    rows += _section("trainer", d["trainer"], _trainer_rows, profile)
    rows += _section("torch", d["torch"], _torch_rows, profile)
    rows += _section("torchvision", d["torchvision"], _torchvision_rows, d["torch"])
    rows += _section("dali", d["dali"], _dali_rows, profile, data_kind, recipe_given)
    if profile.engine == "ddp":
        rows.append(ok("horovod", "not needed: engine ddp uses torch.distributed (torchrun)"))
        return rows + _section("torch.distributed", d["torch"], _ddp_rows, profile, needs)
    return rows + _section("horovod", d.get("horovod", {}), _horovod_rows, profile, needs)


def _section(name: str, info: dict, rows, *args) -> list[Check]:
    """``rows(info, *args)``, or one warn row when the probe could not collect ``info``."""
    if probe_module.COULD_NOT_COLLECT in info:
        return [warn(name, f"could not collect: {info[probe_module.COULD_NOT_COLLECT]}",
                     f"see the probe's traceback: run python {probe_module.__file__} in the job's "
                     "environment")]
    return rows(info, *args)


def _needs_gpu(profile) -> bool:
    return profile.gpu_type != "cpu"


def _python_rows(info: dict, profile, probe: ProbeResult) -> list[Check]:
    version = info["version"]
    where = info["executable"] + (" in a venv" if info.get("venv") else "")
    if tuple(int(x) for x in version.split(".")[:2]) < MIN_PYTHON:
        return [fail("python", f"{version} at {where}: larsctl's trainer needs Python "
                               f">= {'.'.join(map(str, MIN_PYTHON))}",
                     in_profile(profile, "point python:/venv: in {file} at a newer Python"))]
    notes = [f"`{profile.python}`" + (f" {probe.context}" if probe.context else "")]
    if info.get("prefix") == sys.prefix and info["executable"] == sys.executable:
        notes.append("larsctl's own interpreter")
    found = f"{version}: {where} ({'; '.join(notes)})"
    if "not active" in probe.context:
        return [warn("python", f"{found}: not the job's interpreter", "see the venv row")]
    return [ok("python", found)]


def _trainer_rows(info: dict, profile) -> list[Check]:
    if "error" in info:
        return [fail("trainer", f"`import trainer` fails in the job's Python: {info['error']}",
                     f"install larsctl (which ships the trainer) there: {profile.python} -m pip install "
                     f"-e {repo()}")]
    return [ok("trainer", f"importable from {info['path']}")]


def _torch_rows(info: dict, profile) -> list[Check]:
    if "error" in info:
        return [fail("torch", f"not importable: {info['error']}",
                     f"install torch in the job's environment ({profile.python} -m pip install torch)")]
    build = (f"CUDA {info['cuda']} build" if info.get("cuda") else
             f"ROCm {info['hip']} build" if info.get("hip") else "CPU-only build")
    if _needs_gpu(profile) and not (info.get("cuda") or info.get("hip")):
        row = fail("torch", f"{info['version']}, {build}: gpu_type {profile.gpu_type} needs a CUDA build",
                   "install a CUDA build of torch in the job's environment (pytorch.org/get-started)")
    else:
        row = ok("torch", f"{info['version']}, {build}")
    return [row, _gpus_row(info, profile)]


def _gpus_row(info: dict, profile) -> Check:
    devices = info.get("devices", [])
    shown = ", ".join(f"{d['name']} ({d['memory_gib']:g} GiB)" for d in devices)
    if not _needs_gpu(profile):
        return ok("gpus", (f"{len(devices)} visible ({shown}), unused" if devices else "none visible")
                  + ": gpu_type cpu runs CPU workers")
    if not devices:
        why = f" ({info['devices_error']})" if info.get("devices_error") else ""
        visible = info.get("cuda_visible_devices")
        why += f" CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        return warn("gpus", f"no GPU visible on this machine{why}; the job needs "
                            f"{profile.gpus_per_node} {profile.gpu_type} per node",
                    "login nodes often have none: run doctor on a compute node, e.g. "
                    + _interactive_hint(profile))
    if not any(profile.gpu_type.split("-")[0] in d["name"] for d in devices):
        return warn("gpus", f"{len(devices)} visible: {shown}; the profile says {profile.gpu_type}",
                    in_profile(profile, "set gpu_type in {file} to this node's GPU (the planner's per-GPU "
                                        "batch follows its memory), or run doctor on a node of this profile"))
    return ok("gpus", f"{len(devices)} visible: {shown} (profile: {profile.gpus_per_node} x "
                      f"{profile.gpu_type} per node)")


def _interactive_hint(profile) -> str:
    if profile.scheduler == "slurm":
        part = f" --partition {profile.partition}" if profile.partition else ""
        return f"srun{part} --gres=gpu:1 --pty larsctl doctor --cluster {profile.name}"
    if profile.scheduler == "pbs":
        queue = f" -q {profile.partition}" if profile.partition else ""
        return f"qsub -I{queue} -l select=1:ngpus=1, then larsctl doctor --cluster {profile.name}"
    return f"larsctl doctor --cluster {profile.name} on a machine with the GPUs"


def _torchvision_rows(info: dict, torch_info: dict) -> list[Check]:
    if "error" in info:
        return [fail("torchvision", info["error"], "install torchvision (the release that matches torch) "
                                                   "in the job's environment")]
    version = info.get("version") or "?"
    if "ops_error" in info:
        return [warn("torchvision", f"{version}: its C++ ops do not load with torch "
                                    f"{torch_info.get('version', '?')} ({info['ops_error']})",
                     "install the torchvision release built for this torch")]
    ops = f", C++ ops load ({info['ops']})" if info.get("ops") else ""
    return [ok("torchvision", f"{version}{ops}")]


def _dali_rows(info: dict, profile, data_kind: str | None, recipe_given: bool) -> list[Check]:
    needed = data_kind == "dali"
    why = ("the recipe reads TFRecords with DALI (data: dali)" if needed else
           f"not needed by this recipe (data {data_kind})" if recipe_given else
           "needed only by recipes with data: dali")
    if "error" in info or "version" not in info:
        found = f"not importable ({info.get('error', 'not installed')}); {why}"
        fix = "pip install nvidia-dali-cuda120 (or the variant for your CUDA) in the job's environment"
        return [fail("dali", found, fix) if needed else ok("dali", found) if recipe_given
                else warn("dali", found, fix)]
    variant = info["dists"][0][0] if info.get("dists") else "nvidia-dali"
    kind = _dali_kind(variant, info.get("cuda_version"))
    found = f"{info['version']} ({variant}: {kind}); {why}"
    if _needs_gpu(profile) and kind == "CPU-only variant":
        message = (f"{found}; gpu_type {profile.gpu_type} decodes on the GPU (DALI 'mixed'), which the "
                   "CPU-only variant lacks")
        fix = "pip install nvidia-dali-cuda120 (the variant for your CUDA) instead"
        return [fail("dali", message, fix) if needed else warn("dali", message, fix)]
    return [ok("dali", found)]


def _dali_kind(variant: str, cuda: str | None) -> str:
    match = re.search(r"cuda(\d+)", variant)
    if match:
        return f"CUDA {match.group(1)[:-1]}.{match.group(1)[-1]} variant"
    if cuda and "cpu" not in variant.lower():
        return f"CUDA variant ({cuda})"
    return "CPU-only variant"


def _horovod_rows(info: dict, profile, needs: Needs) -> list[Check]:
    build = ("rebuild Horovod in the job's environment: .ci/build-horovod.sh VENV WHEEL_DIR "
             "(builds against its torch and the MPI on PATH)")
    if "error" in info or not info:
        return [fail("horovod", f"not importable: {info.get('error', 'not checked')} (engine horovod "
                                "needs it)", build)]
    if "torch_error" in info:
        return [fail("horovod", f"{info['version']}, but horovod.torch fails: {info['torch_error']} "
                                "(built for another torch, or without PyTorch)", build)]
    return [ok("horovod", f"{info['version']}, built with PyTorch (horovod.torch imports)"),
            _horovod_ops_row(info, profile, needs)]


def _horovod_ops_row(info: dict, profile, needs: Needs) -> Check:
    have = {"MPI": info.get("mpi"), "Gloo": info.get("gloo"), "NCCL": bool(info.get("nccl"))}
    built = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in have.items())
    if needs.error:
        return warn("horovod ops", f"{built}: not checked: the profile has no launch line",
                    "see the launcher row")
    need = "MPI" if "mpi" in needs.names else "Gloo"
    wants = f"mpi {profile.mpi} needs {need}; " + (f"gpu_type {profile.gpu_type} wants NCCL"
                                                   if "nccl" in needs.names else "gpu_type cpu needs no NCCL")
    if not have[need]:
        how = ("with the cluster's MPI loaded (mpicc on PATH; HOROVOD_WITH_MPI=1)" if need == "MPI"
               else "with Gloo (HOROVOD_WITH_GLOO=1; needs cmake)")
        return fail("horovod ops", f"{built}: {wants}",
                    f"rebuild Horovod {how}: .ci/build-horovod.sh VENV WHEEL_DIR")
    if "nccl" in needs.names and not have["NCCL"]:
        return warn("horovod ops", f"{built}: {wants}; without NCCL, GPU gradients are copied to host "
                                   f"memory and allreduced by {need} (much slower)",
                    "rebuild Horovod where CUDA and NCCL are present (.ci/build-horovod.sh then "
                    "sets HOROVOD_GPU_OPERATIONS=NCCL)")
    return ok("horovod ops", f"{built}: {wants}")


def _ddp_rows(info: dict, profile, needs: Needs) -> list[Check]:
    dist = info.get("dist") or {}
    if "error" in info or "error" in dist or not dist.get("available"):
        return [fail("torch.distributed", f"not available: {dist.get('error') or info.get('error') or 'no'}",
                     "install a torch build with distributed support")]
    built = ", ".join(f"{b} {'yes' if dist.get(b) else 'no'}" for b in ("gloo", "nccl", "mpi"))
    if needs.error:
        return [warn("torch.distributed", f"{built}: not checked: the profile has no launch line",
                     "see the launcher row")]
    backend = "nccl" if "nccl" in needs.names else "gloo"
    if not dist.get(backend):
        return [fail("torch.distributed", f"{built}: the trainer's ddp engine uses {backend} on gpu_type "
                                          f"{profile.gpu_type}", f"install a torch build with {backend}")]
    return [ok("torch.distributed", f"{built}: the ddp engine uses {backend}")]
