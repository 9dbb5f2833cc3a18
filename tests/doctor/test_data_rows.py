"""The data rows of a recipe that reads TFRecords with DALI: real shards, real DALI index files."""
from __future__ import annotations

import ast
import json
from pathlib import Path

from trainer.data.tfrecord import INDEX_DIR, SPLITS, image_example, make_index, shard_name, write_record

REPO = Path(__file__).resolve().parents[2]
RECIPE = ("name: tfr\nmodel: resnet18\ntarget_batch: 2\nper_gpu_batch: 1\nepochs: 1\ntrain_images: 6\n"
          "trainer:\n  data_dir: {root}\n  image_size: 8\n  workers: 0\n")


def write_shards(root: Path, split: str, shards: int, per_shard: int, index: bool = True) -> None:
    (root / split).mkdir(parents=True)
    for i in range(shards):
        path = root / split / shard_name(split, i, shards)
        with open(path, "wb") as fh:
            for n in range(per_shard):
                write_record(fh, image_example(b"\xff\xd8not-decoded", f"{n}.jpg", 8, 8, 0, "cat"))
        if index:
            make_index(path, root / INDEX_DIR / split / path.name)  # DALI's own tfrecord2idx


def recipe_for(tmp_path: Path, root: Path) -> str:
    recipe = tmp_path / f"{root.name}.yaml"
    recipe.write_text(RECIPE.format(root=root))
    return str(recipe)


def test_tfrecord_rows(doctor, tmp_path):
    good, unindexed, blocked = (tmp_path / name for name in ("good", "unindexed", "blocked"))
    write_shards(good, "train", shards=2, per_shard=3)
    write_shards(good, "validation", shards=1, per_shard=2)
    write_shards(unindexed, "train", shards=2, per_shard=1)
    write_shards(unindexed, "validation", shards=2, per_shard=1, index=False)
    write_shards(blocked, "train", shards=1, per_shard=1, index=False)
    (blocked / INDEX_DIR).write_text("a file where the index directory should be\n")
    runs = [doctor.start("--recipe", recipe_for(tmp_path, root), "--json")
            for root in (good, unindexed, blocked, tmp_path / "missing")]
    (good_rows, unindexed_rows, blocked_rows, missing_rows) = (
        doctor.rows(json.loads(doctor.finish(run).stdout)) for run in runs)

    assert good_rows["data train"] == {"status": "ok", "name": "data train", "fix": "",
                                       "found": f"{good}/train: 2 shard(s), 6 records, every shard indexed"}
    assert good_rows["data validation"]["found"] == f"{good}/validation: 1 shard(s), 2 records, every shard indexed"

    row = unindexed_rows["data validation"]
    assert row["status"] == "warn" and unindexed_rows["data train"]["status"] == "ok"
    assert row["found"].startswith(f"{unindexed}/validation: 2 shard(s); 2 without an index in "
                                   f"{unindexed}/{INDEX_DIR}/validation (e.g. validation-00000-of-00002")
    assert "every rank would build them at start" in row["found"]
    assert row["fix"].startswith(f"make them once: for f in {unindexed}/validation/*; do tfrecord2idx ")

    row = blocked_rows["data train"]
    assert row["status"] == "FAIL" and row["found"].endswith("the index directory is not writable")
    assert blocked_rows["data validation"]["status"] == "FAIL"
    assert blocked_rows["data validation"]["found"] == f"{blocked}/validation: TFRecord directory not found"
    assert blocked_rows["data validation"]["fix"] == (
        "expected the TFRecord layout: data_dir/train/*, data_dir/validation/*, "
        "data_dir/idx_files/{train,validation}/*")

    row = missing_rows["data"]
    assert row["status"] == "FAIL" and row["found"].startswith(f"{tmp_path / 'missing'}: data_dir not found")


def test_doctor_holds_no_copy_of_the_tfrecord_layout():
    """The layout's names are defined once, in trainer/data/tfrecord.py; doctor imports them."""
    sources = [REPO / "larsctl" / "doctor.py", *sorted((REPO / "larsctl" / "doctor").glob("*.py"))]
    for path in (p for p in sources if p.exists()):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                spelled = [name for name in SPLITS if text == name] + [
                    name for name in (INDEX_DIR, SPLITS[1]) if name in text]
                assert not spelled, f"{path}:{node.lineno}: {text!r} spells {spelled[0]!r}"
