"""prepare -> convert -> verify from archives in the official structure, then the real trainer
trains from both layouts, and both loaders give the same file the same label."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from tests.data.helpers import (CLASSES, TRAIN_PER_CLASS, TRAIN_SHARDS, VAL_PER_CLASS, VAL_SHARDS, cli, run_cli,
                                tree)
from trainer.data import DataConfig, build_loaders
from trainer.data.tfrecord import LABEL_OFFSET, decode_example, read_records

REPO = Path(__file__).resolve().parents[2]


def records(tfrecord_dir: Path, split: str) -> list[dict]:
    return [decode_example(payload) for shard in sorted((tfrecord_dir / split).iterdir())
            for payload in read_records(shard)]


def archive_images(archives: Path) -> dict[str, bytes]:
    """Path inside the archives -> bytes, for every train and val image."""
    out = {}
    with tarfile.open(archives / "ILSVRC2012_img_train.tar") as outer:
        for member in outer:
            with tarfile.open(fileobj=outer.extractfile(member), mode="r|") as inner:
                for image in inner:
                    out[f"ILSVRC2012_img_train.tar/{member.name}/{image.name}"] = inner.extractfile(image).read()
    with tarfile.open(archives / "ILSVRC2012_img_val.tar") as val:
        for member in val:
            out[f"ILSVRC2012_img_val.tar/{member.name}"] = val.extractfile(member).read()
    return out


def test_prepare_writes_imagefolder_with_val_sorted_by_class(archives, prepared):
    root, truth = archives
    images = archive_images(root)
    for path, data in images.items():
        parts = path.split("/")
        if parts[0] == "ILSVRC2012_img_train.tar":
            dest = prepared / "train" / parts[1].removesuffix(".tar") / parts[2]
        else:
            number = int(parts[1].removeprefix("ILSVRC2012_val_").removesuffix(".JPEG"))
            dest = prepared / "val" / truth.val[number] / parts[1]
        if path in truth.undecodable:
            assert not dest.exists()
        else:
            assert dest.read_bytes() == data, path  # copied unchanged, into the right class folder
    assert sorted(p.name for p in (prepared / "train").iterdir()) == truth.classes
    assert sorted(p.name for p in (prepared / "val").iterdir()) == truth.classes
    files = [p for p in prepared.rglob("*.JPEG")]
    assert len(files) == CLASSES * (TRAIN_PER_CLASS + VAL_PER_CLASS) - len(truth.undecodable)
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["layout"] == "imagefolder"
    assert [item["path"] for item in manifest["left_out"]] == truth.undecodable
    assert manifest["splits"]["val"]["classes"] == {w: VAL_PER_CLASS for w in truth.classes}
    assert sum(manifest["splits"]["train"]["classes"].values()) == CLASSES * TRAIN_PER_CLASS - 1
    assert not (prepared / ".larsctl" / "partial").exists()


@pytest.mark.parametrize("labels", ["kaggle csv", "tf synsets", "unpacked devkit with --meta"])
def test_every_accepted_label_file_sorts_val_the_same_way(archives, prepared, tmp_path, labels):
    root, _ = archives
    if labels == "kaggle csv":
        args = ["--val-labels", root / "LOC_val_solution.csv"]
    elif labels == "tf synsets":
        args = ["--val-labels", root / "imagenet_2012_validation_synset_labels.txt"]
    else:
        with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz") as devkit:
            devkit.extractall(tmp_path / "devkit", filter="data")
        data = tmp_path / "devkit" / "ILSVRC2012_devkit_t12" / "data"
        (data / "meta.mat").rename(tmp_path / "meta.mat")  # not beside the ground truth: --meta names it
        args = ["--val-labels", data / "ILSVRC2012_validation_ground_truth.txt", "--meta", tmp_path / "meta.mat"]
    r = cli("prepare", root, tmp_path / "out", "--workers", "1", *args)
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "out" / "val") == tree(prepared / "val")


def test_convert_labels_are_the_sorted_class_index_plus_one_and_images_rgb_jpeg(archives, prepared, converted):
    _, truth = archives
    assert sorted(p.name for p in (converted / "train").iterdir()) == \
        [f"train-{i:05d}-of-{TRAIN_SHARDS:05d}" for i in range(TRAIN_SHARDS)]
    assert sorted(p.name for p in (converted / "idx_files" / "validation").iterdir()) == \
        [f"validation-{i:05d}-of-{VAL_SHARDS:05d}" for i in range(VAL_SHARDS)]
    assert (converted / "classes.txt").read_text().split() == truth.classes
    awkward = {path.rsplit("/", 1)[1] for kind, path in truth.awkward.items() if kind != "truncated"}
    for split, folder_split in (("train", "train"), ("validation", "val")):
        folder = ImageFolder(str(prepared / folder_split), loader=str)  # what --data imagefolder reads
        label_of = {Path(p).name: label for p, label in folder.samples}
        examples = records(converted, split)
        assert sorted(e["image/filename"].decode() for e in examples) == sorted(label_of)
        for e in examples:
            name = e["image/filename"].decode()
            assert e["image/class/label"] == label_of[name] + LABEL_OFFSET
            assert e["image/class/text"].decode() == folder.classes[label_of[name]]
            with Image.open(io.BytesIO(e["image/encoded"])) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (e["image/width"], e["image/height"]))
            original = (prepared / folder_split / e["image/class/text"].decode() / name).read_bytes()
            # CMYK, PNG-named-.JPEG and grayscale files are re-encoded; RGB JPEGs are kept byte for byte
            assert (e["image/encoded"] == original) == (name not in awkward), name
    manifest = json.loads((converted / "manifest.json").read_text())
    assert manifest["reencoded"] == len(awkward) == 5
    assert manifest["splits"]["train"]["images"] == CLASSES * TRAIN_PER_CLASS - 1


def test_verify_accepts_both_layouts(prepared, converted):
    for directory, layout in ((prepared, "imagefolder"), (converted, "tfrecord")):
        r = cli("verify", directory, "--full", "--workers", "2")
        assert r.exit_code == 0, r.output
        assert r.stdout.strip().splitlines()[-1] == f"ok: {directory} ({layout})"


def test_reruns_skip_finished_work_and_change_nothing(archives, prepared, converted):
    before = tree(prepared), tree(converted)
    r = cli("prepare", archives[0], prepared)
    assert r.exit_code == 0, r.output
    assert f"({CLASSES} classes written" not in r.stdout and f"0 classes written, {CLASSES} already done" in r.stdout
    r = cli("convert", prepared, converted, "--train-shards", TRAIN_SHARDS, "--val-shards", VAL_SHARDS)
    assert r.exit_code == 0, r.output
    assert f"(0 shards written, {TRAIN_SHARDS + VAL_SHARDS} already done)" in r.stdout
    assert (tree(prepared), tree(converted)) == before


def test_the_cli_runs_as_a_real_process(converted):
    r = run_cli("verify", converted)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(f"ok: {converted} (tfrecord)")


@pytest.mark.parametrize("kind", ["dali", "imagefolder"])
def test_the_trainer_trains_a_few_steps_from_the_result(prepared, converted, tmp_path, kind):
    data = ["--data-dir", converted] if kind == "dali" else ["--train-dir", prepared / "train",
                                                             "--val-dir", prepared / "val"]
    argv = [sys.executable, "-m", "trainer", "--engine", "ddp", "--data", kind, *data, "--model", "resnet18",
            "--image-size", "16", "--batch-size", "4", "--val-batch-size", "4", "--epochs", "1",
            "--max-steps", "2", "--warmup-epochs", "0.1", "--workers", "0", "--no-cuda",
            "--out-dir", tmp_path / "run"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        env.pop(var, None)
    r = subprocess.run([str(a) for a in argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "done" and e["step"] == 2 for e in events)
    assert any(e["kind"] == "val" for e in events)


def test_dali_and_imagefolder_loaders_give_each_file_the_same_label(prepared, converted):
    common = dict(image_size=16, batch_size=4, val_batch_size=4, workers=1)
    dali = build_loaders(DataConfig(kind="dali", data_dir=str(converted), **common))
    folder = build_loaders(DataConfig(kind="imagefolder", train_dir=str(prepared / "train"),
                                      val_dir=str(prepared / "val"), **dict(common, workers=0)))
    assert dali.num_classes == folder.num_classes == CLASSES
    assert dali.val_samples == folder.val_samples == CLASSES * VAL_PER_CLASS
    dali_labels = torch.cat([labels for _, labels in dali.val]).tolist()  # record order, 0-based
    names = [e["image/filename"].decode() for e in records(converted, "validation")]
    label_of = {Path(p).name: label for p, label in ImageFolder(str(prepared / "val"), loader=str).samples}
    assert dali_labels == [label_of[name] for name in names]
    folder_labels = sorted(torch.cat([labels for _, labels in folder.val]).tolist())
    assert sorted(dali_labels) == folder_labels
