"""The probe on its own: a standard-library module that real interpreters run three ways.

Broken installs are real packages on PYTHONPATH (a `torch` that raises on import, one
that imports but lacks what the probe reads); the bare interpreter is the system's
python3, which has none of the stack.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from larsctl.doctor import probe

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(probe.__file__)
SYSTEM_PYTHON = Path("/usr/bin/python3")


def run_probe(how: list[str], request: dict | None = None, python: str = sys.executable,
              env: dict | None = None, stdin=None) -> tuple[dict, subprocess.CompletedProcess]:
    argv = [python, *how, *([json.dumps(request)] if request is not None else [])]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=stdin, cwd=REPO,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    (line,) = [line for line in r.stdout.splitlines() if line.startswith(probe.MARKER)]
    return json.loads(line[len(probe.MARKER):]), r


def broken_torch(tmp_path: Path, body: str) -> dict:
    """PYTHONPATH with a package `torch` whose __init__ is ``body``."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(body)
    return {"PYTHONPATH": str(tmp_path)}


def test_three_ways_to_run_it_say_the_same():
    request = {"sections": ["stack", "horovod"], "modules": ["torch.distributed.run", "no.such.module"]}
    by_path, r = run_probe([str(PROBE)], request)
    as_module, rm = run_probe(["-m", "larsctl.doctor.probe"], request)
    with open(PROBE) as source:  # how doctor runs it: the source on stdin
        on_stdin, _ = run_probe(["-"], request, stdin=source)
    assert by_path == as_module == on_stdin
    assert "Warning" not in rm.stderr  # the package imports no check module before -m runs this one
    assert by_path["python"]["executable"] == sys.executable
    assert by_path["torch"]["version"] and by_path["horovod"]["version"]
    assert by_path["modules"]["torch.distributed.run"].endswith("run.py")
    assert by_path["modules"]["no.such.module"] is None
    assert not any(probe.COULD_NOT_COLLECT in section for section in by_path.values())


def test_without_a_request_it_reports_the_stack_and_horovod():
    info, _ = run_probe([str(PROBE)])
    assert {"python", "trainer", "torch", "torchvision", "dali", "horovod", "modules"} <= set(info)
    assert "data" not in info


@pytest.mark.skipif(not SYSTEM_PYTHON.is_file(), reason="no system python3")
def test_a_bare_interpreter_reports_what_is_missing(tmp_path):
    """The system's python3, outside the repository: no torch, no trainer, nothing fails."""
    r = subprocess.run([str(SYSTEM_PYTHON), str(PROBE)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={"PATH": os.defpath})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.split(probe.MARKER, 1)[1])
    if "version" in info["torch"]:
        pytest.skip("the system python3 has torch")
    assert info["python"]["executable"] == str(SYSTEM_PYTHON)
    assert info["torch"] == {"error": "ModuleNotFoundError: No module named 'torch'"}
    assert info["trainer"] == {"error": "ModuleNotFoundError: No module named 'trainer'"}
    assert info["horovod"]["error"].startswith("ModuleNotFoundError")
    assert r.stderr == ""


def test_a_torch_that_fails_to_import_is_an_error_not_a_crash(tmp_path):
    env = broken_torch(tmp_path, "raise ImportError('libcudart.so.12: cannot open shared object file')\n")
    info, _ = run_probe([str(PROBE)], {"sections": ["stack", "horovod"]}, env=env)
    assert info["torch"] == {"error": "ImportError: libcudart.so.12: cannot open shared object file"}
    assert "ops" not in info["torchvision"]  # no torch to load its C++ ops into
    assert "torch_error" in info["horovod"] or "error" in info["horovod"]
    assert info["python"]["version"]  # the other sections ran


def test_a_section_whose_probe_fails_could_not_be_collected(tmp_path):
    """A torch that imports but has no __version__: the torch section degrades, nothing else."""
    env = broken_torch(tmp_path, "")
    info, r = run_probe([str(PROBE)], {"sections": ["stack"]}, env=env)
    assert info["torch"] == {probe.COULD_NOT_COLLECT: "AttributeError: module 'torch' has no attribute '__version__'"}
    assert "Traceback" in r.stderr and "probe_torch" in r.stderr  # for whoever runs it by hand
    assert info["python"]["version"] and "dists" in info["dali"]


def test_the_recipes_image_folders_with_the_trainers_functions(tmp_path):
    for split, classes in (("train", ["cat", "dog"]), ("val", ["cat"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            (tmp_path / split / name / "0.png").write_bytes(b"")
    data = {"kind": "imagefolder", "train_dir": str(tmp_path / "train"), "val_dir": str(tmp_path / "val")}
    info = probe.get_env_info({"sections": [], "data": data})  # in this process: it is a plain module
    assert info["data"]["train_dir"] == {"path": str(tmp_path / "train"), "classes": 2, "images": 2}
    assert "only in train ['dog']" in info["data"]["classes"]["error"]
    missing = probe.get_env_info({"sections": [], "data": {**data, "val_dir": str(tmp_path / "nope")}})
    assert "error" in missing["data"]["val_dir"] and "classes" not in missing["data"]


def test_it_is_standard_library_only_and_reads_as_python_3_6():
    tree = ast.parse(PROBE.read_text(), feature_version=(3, 6))
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name.split(".")[0] for node in top for alias in getattr(node, "names", [])
             if isinstance(node, ast.Import)} | {node.module.split(".")[0] for node in top
                                                 if isinstance(node, ast.ImportFrom)}
    assert names and names <= sys.stdlib_module_names, names - sys.stdlib_module_names
    assert "__future__" not in names  # `from __future__ import annotations` needs 3.7
