"""What the job's own Python has, printed as one JSON line: ``larsctl doctor``'s probe.

Like ``python -m torch.utils.collect_env`` this is a module of its own, run by the
interpreter it reports on: doctor runs it with the profile's ``python`` in the shell
the batch script makes (modules, venv, container), as ``python - REQUEST < probe.py``
so that a container needs no view of larsctl's files.  By hand::

    python -m larsctl.doctor.probe                       # where larsctl is installed
    python path/to/larsctl/doctor/probe.py '{"sections": ["stack", "horovod"]}'

REQUEST (JSON, optional) says what to look at: ``sections`` (``stack``: torch, its
GPUs, torchvision, DALI; ``horovod``), ``modules`` (launcher modules to find, e.g.
``torch.distributed.run``) and ``data`` (the recipe's data directories, checked with
the trainer's own functions).  :func:`get_env_info` gathers a plain dict and
:func:`main` prints it after :data:`MARKER`.

Rules, because it runs in interpreters larsctl does not control: the standard
library only at the top (every other import is what is being probed, and guarded),
syntax any Python >= 3.6 reads (so an old interpreter is reported, not a
SyntaxError), and each section degrades to ``{"could_not_collect": why}`` with the
traceback on stderr instead of failing the whole probe.
"""
import glob
import importlib.util
import json
import os
import pathlib
import platform
import sys
import traceback

MARKER = "@@larsctl-doctor@@"      # the JSON line starts with it (modules and venvs may print too)
COULD_NOT_COLLECT = "could_not_collect"


def why(exc):
    text = " ".join(str(exc).split())
    return (type(exc).__name__ + (": " + text if text else ""))[:400]


def collect(probe, *args):
    """``probe(*args)``, or ``{"could_not_collect": why}`` (traceback on stderr) when it raises."""
    try:
        return probe(*args)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return {COULD_NOT_COLLECT: why(exc)}


def spec_origin(name):
    """Where module ``name`` would be imported from (None when it cannot be); never raises."""
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


# --- the sections ------------------------------------------------------------------------

def probe_python():
    return {"version": platform.python_version(), "executable": sys.executable, "prefix": sys.prefix,
            "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix)}


def probe_trainer():
    try:
        import trainer
    except Exception as exc:
        return {"error": why(exc)}
    return {"path": os.path.dirname(os.path.abspath(trainer.__file__))}


def probe_torch():
    try:
        import torch
    except Exception as exc:
        return {"error": why(exc)}
    info = {"version": torch.__version__, "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None), "devices": [],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
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
    return info


def probe_torchvision():
    """Its version, and its C++ ops library loaded into torch the way torchvision.extension does
    (importing torchvision whole costs seconds: it imports torch._dynamo)."""
    where = spec_origin("torchvision")
    if where is None:
        return {"error": "not installed"}
    info = {"version": dist_version("torchvision"), "path": os.path.dirname(where)}
    libs = sorted(glob.glob(os.path.join(os.path.dirname(where), "_C*.so")))
    torch = sys.modules.get("torch")  # probe_torch imported it, if it imports
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
        pass  # Python < 3.8: the variant is unknown, the import below still says whether it works
    try:
        import nvidia.dali
        info["version"] = nvidia.dali.__version__
    except Exception as exc:
        info["error"] = why(exc)
        return info
    try:
        import nvidia.dali.backend as backend
        info["cuda_version"] = getattr(backend, "__cuda_version__", None)
    except Exception:
        pass
    return info


def probe_horovod():
    try:
        import horovod
    except Exception as exc:
        return {"error": why(exc)}
    info = {"version": horovod.__version__}
    try:
        import horovod.torch as hvd
        info.update(torch=True, mpi=bool(hvd.mpi_built()), gloo=bool(hvd.gloo_built()),
                    nccl=int(hvd.nccl_built() or 0), cuda=bool(hvd.cuda_built()))
    except Exception as exc:
        info["torch_error"] = why(exc)
    return info


def probe_modules(names):
    return dict((name, spec_origin(name)) for name in names)


# --- the recipe's data, with the trainer's own functions ---------------------------------

def probe_imagefolder(data):
    """What the trainer would raise at start about train_dir and val_dir."""
    from trainer.data.errors import DataError
    from trainer.data.imagefolder import check_same_classes, scan_folder
    result, found = {}, {}
    for key in ("train_dir", "val_dir"):
        try:
            found[key] = scan_folder(data.get(key), key)
            result[key] = {"path": data.get(key), "classes": len(found[key].classes),
                           "images": len(found[key].samples)}
        except DataError as exc:
            result[key] = {"path": data.get(key), "error": str(exc)}
    if len(found) == 2:
        try:
            check_same_classes(found["train_dir"], found["val_dir"], data["train_dir"], data["val_dir"])
            result["classes"] = {"same": True}
        except DataError as exc:
            result["classes"] = {"error": str(exc)}
    return result


def probe_tfrecords(data):
    """The layout trainer.data.dali.find_split reads, without its side effect of writing
    missing index files (the trainer makes them; doctor only looks)."""
    from trainer.data.errors import DataError
    from trainer.data.tfrecord import INDEX_DIR, SPLITS, count_indexed, record_files
    root = data.get("data_dir")
    if not root or not os.path.isdir(root):
        layout = (SPLITS[0], SPLITS[1], INDEX_DIR)
        return {"error": "%s: data_dir not found (expected %s/, %s/ and %s/)" % ((root,) + layout)}
    result = {}
    for split in SPLITS:
        try:
            records = record_files(pathlib.Path(root, split))
        except DataError as exc:
            result[split] = {"error": str(exc)}
            continue
        result[split] = _index_state(records, os.path.join(root, INDEX_DIR, split), count_indexed)
    return result


def _index_state(records, index_dir, count_indexed):
    indexed = [os.path.isfile(os.path.join(index_dir, r.name)) for r in records]
    have = [os.path.join(index_dir, r.name) for r, yes in zip(records, indexed) if yes]
    missing = [r.name for r, yes in zip(records, indexed) if not yes]
    parent = index_dir  # where the trainer would create the missing ones
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return {"shards": len(records), "indexed": len(have), "missing": missing[:3],
            "missing_count": len(missing), "index_dir": index_dir,
            "records": count_indexed(have) if have else 0,
            "index_dir_writable": os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)}


# --- all of it ---------------------------------------------------------------------------

def get_env_info(request):
    """The sections ``request`` asks for, as a plain dict (see the module's docstring)."""
    sections = request.get("sections", ["stack", "horovod"])
    info = {"python": collect(probe_python), "trainer": collect(probe_trainer)}
    if "stack" in sections:
        info["torch"] = collect(probe_torch)
        info["torchvision"] = collect(probe_torchvision)
        info["dali"] = collect(probe_dali)
    if "horovod" in sections:
        info["horovod"] = collect(probe_horovod)
    info["modules"] = probe_modules(request.get("modules", []))  # spec_origin never raises
    data = request.get("data")
    if data:
        scan = probe_imagefolder if data.get("kind") == "imagefolder" else probe_tfrecords
        info["data"] = collect(scan, data)
    return info


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    request = json.loads(argv[0]) if argv else {}
    sys.stdout.write("\n" + MARKER + json.dumps(get_env_info(request)) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
