"""The code reads one way, top to bottom: a module imports from its own layer and those below.

Bottom up: the trainer package (below everything), larsctl.facts, config, planning, results,
schedulers, jobs, then doctor and data, then the commands and the CLI.  One exception is named:
the scheduler classes build their own `larsctl doctor` rows from larsctl.doctor.report, a
module of row types that imports nothing above the schedulers.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["facts", "config", "planning", "results", "schedulers", "jobs", "doctor|data", "commands|cli|__main__"]
# The small shared modules directly in larsctl/ (errors, format, __init__) are below every layer.
BASE = {"errors", "format", ""}
ALLOWED = {("schedulers", "larsctl.doctor.report")}


def layer_of(package: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if package in names.split("|"):
            return i
    return None


def imports(path: Path) -> list[tuple[str, int]]:
    """Every larsctl module ``path`` imports (at any depth of the file), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "larsctl":
                found += [(f"larsctl.{a.name}", node.lineno) for a in node.names]
            elif node.module.startswith("larsctl."):
                found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("larsctl.")]
    return found


def violations(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        own = layer_of(rel.parts[0] if len(rel.parts) > 1 else rel.stem)
        if own is None:
            continue
        for module, line in imports(path):
            part = module.split(".")[1] if "." in module else ""
            theirs = None if part in BASE else layer_of(part)
            if theirs is not None and theirs > own and (LAYERS[own], module) not in ALLOWED \
                    and not any(module.startswith(a) for layer, a in ALLOWED if LAYERS[own] == layer):
                out.append(f"larsctl/{rel}:{line} ({LAYERS[own]}) imports {module} ({LAYERS[theirs]})")
    return out


def test_no_module_imports_from_a_layer_above_its_own():
    assert violations(REPO / "larsctl") == []


def test_the_check_sees_an_upward_import(tmp_path):
    (tmp_path / "schedulers").mkdir()
    (tmp_path / "schedulers" / "x.py").write_text("def f():\n    from larsctl.jobs.lifecycle import submit\n")
    (tmp_path / "facts").mkdir()
    (tmp_path / "facts" / "y.py").write_text("from larsctl.config import profiles\n")
    assert violations(tmp_path) == [
        "larsctl/facts/y.py:1 (facts) imports larsctl.config (config)",
        "larsctl/schedulers/x.py:2 (schedulers) imports larsctl.jobs.lifecycle (jobs)"]


def test_the_trainer_imports_nothing_of_larsctl():
    bad = [f"{p.relative_to(REPO)}:{line} imports {m}" for p in sorted((REPO / "trainer").rglob("*.py"))
           for m, line in imports(p)]
    assert bad == []


@pytest.mark.parametrize("package", ["facts"])
def test_the_bottom_layer_imports_no_other_layer(package):
    paths = (REPO / "larsctl" / package).rglob("*.py")
    assert [m for p in paths for m, _ in imports(p)
            if not m.startswith(f"larsctl.{package}") and m.split(".")[1] not in BASE] == []
