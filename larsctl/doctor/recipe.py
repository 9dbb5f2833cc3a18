"""The recipe rows (``--recipe``): it plans on this profile, its trainer options resolve,
and its data directories have the layout the trainer reads.

The data directories are read where the job reads them, by a second probe
(:mod:`larsctl.doctor.probe`, ``data`` request) that uses the trainer's own
functions; this module asks for it and turns its answer into rows.  The TFRecord
layout's names come from ``trainer/data/tfrecord.py``, where they are defined.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from larsctl.config.env import expand_path, variables_in
from larsctl.doctor import probe as probe_module
from larsctl.doctor.report import Check, fail, ok, warn
from larsctl.doctor.runner import ProbeResult
from larsctl.jobs.history import measured_throughput
from larsctl.planning.spec import resolve_job
from trainer.config import data_kind as trainer_data_kind
from trainer.config import resolve as resolve_trainer
from trainer.data.tfrecord import INDEX_DIR, SPLITS
from trainer.errors import BadInput

DATA_KEYS = ("train_dir", "val_dir", "data_dir")
TFRECORD_LAYOUT = (f"expected the TFRecord layout: data_dir/{SPLITS[0]}/*, data_dir/{SPLITS[1]}/*, "
                   f"data_dir/{INDEX_DIR}/{{{','.join(SPLITS)}}}/*")


@dataclass(frozen=True)
class RecipeResult:
    rows: tuple[Check, ...]
    spec: object = None               # the JobSpec when it planned
    data_kind: str | None = None      # the trainer's data pipeline (None if it did not resolve)
    data_request: dict | None = None  # what the data probe must check on disk


def check_recipe(profile, recipe, recipe_path: Path) -> RecipeResult:
    """The recipe plans on this profile, its trainer options resolve, and which data to check."""
    try:
        spec = resolve_job(profile, recipe, measured=measured_throughput)
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
    return _data_to_check(spec, cfg, kind, rows)


def _data_to_check(spec, cfg, kind: str, rows: list[Check]) -> RecipeResult:
    data_keys = [k for k in DATA_KEYS if spec.trainer.get(k)]
    unset = sorted(set().union(*(variables_in(str(spec.trainer[k])) for k in data_keys)))
    others = sorted(set(spec.unset_variables) - set(unset))
    if others:
        rows.append(fail("recipe paths", f"{', '.join('$' + v for v in others)} not set here (used in the "
                                         "trainer section's log_dir/out_dir/checkpoint_format)",
                         f"export {others[0]}=... before running larsctl (submit expands the paths then)"))
    if cfg.dataset == "digits" and kind != "synthetic":
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
    request = {"kind": kind, **{k: spec.trainer.get(k) for k in DATA_KEYS}}
    return RecipeResult(tuple(rows), spec, kind, request)


def check_data(request: dict | None, probe: ProbeResult | None) -> list[Check]:
    """Rows for the data directories, from the data probe (the trainer's own functions)."""
    if not request or probe is None:
        return []
    if not probe.data:
        return [fail("data", f"not checked: {probe.error}", "see the python row")]
    result = probe.data.get("data", {})
    if probe_module.COULD_NOT_COLLECT in result:
        return [fail("data", f"not checked: the trainer's data code fails in the job's Python: "
                             f"{result[probe_module.COULD_NOT_COLLECT]}", "see the python and trainer rows")]
    if "error" in result:
        return [fail("data", result["error"], TFRECORD_LAYOUT)]
    if request["kind"] == "imagefolder":
        return _imagefolder_rows(result)
    return [_tfrecord_row(request["data_dir"], split, result.get(split, {})) for split in SPLITS]


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
    if classes is not None and "error" in classes:
        rows.append(fail("data classes", classes["error"],
                         "val_dir needs exactly the class folders of train_dir (labels are their "
                         "sorted order)"))
    elif classes is not None:
        rows.append(ok("data classes", "train and val have the same class folders"))
    return rows


def _tfrecord_row(root: str, split: str, entry: dict) -> Check:
    row = f"data {split}"
    if "error" in entry:
        return fail(row, entry["error"], TFRECORD_LAYOUT)
    found = f"{root}/{split}: {entry['shards']} shard(s)"
    if not entry["missing_count"]:
        return ok(row, f"{found}, {entry['records']} records, every shard indexed")
    message = (f"{found}; {entry['missing_count']} without an index in {entry['index_dir']} "
               f"(e.g. {', '.join(entry['missing'])})")
    make = (f"make them once: for f in {shlex.quote(root)}/{split}/*; do tfrecord2idx \"$f\" "
            f"{shlex.quote(entry['index_dir'])}/\"$(basename \"$f\")\"; done")
    if entry.get("index_dir_writable"):
        return warn(row, message + "; every rank would build them at start", make)
    return fail(row, message + "; the index directory is not writable", make)
