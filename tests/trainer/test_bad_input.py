"""Bad input: `python -m trainer` prints one line naming the problem and exits 2, no traceback."""
from __future__ import annotations

import subprocess

import pytest
import yaml
from PIL import Image

from tests.trainer.helpers import PY, REPO, trainer_env

BASE = ["--model", "resnet18", "--image-size", "16", "--workers", "0", "--no-cuda", "--epochs", "1",
        "--warmup-epochs", "0", "--max-steps", "1"]


def image_folder(root, classes):
    for c in classes:
        (root / c).mkdir(parents=True)
        Image.new("RGB", (20, 20), (10, 20, 30)).save(root / c / "0.png")
    return root


def trainer(args, tmp_path):
    proc = subprocess.run([PY, "-m", "trainer", *args, "--out-dir", str(tmp_path / "out")], cwd=REPO,
                          env=trainer_env(), capture_output=True, text=True, timeout=180)
    return proc.returncode, proc.stderr


def job_yaml(tmp_path, trainer, plan=None):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"job": {"name": "t"}, "plan": plan or {}, "trainer": trainer}))
    return str(path)


CASES = {
    "missing data dirs": (lambda t: ["--train-dir", str(t / "no" / "train"), "--val-dir", str(t / "no" / "val")],
                          "no/train"),
    "empty data dirs": (lambda t: ["--train-dir", str(mk(t / "e" / "train")), "--val-dir", str(mk(t / "e" / "val"))],
                        "e/train"),
    "class mismatch": (lambda t: ["--train-dir", str(image_folder(t / "c" / "train", ["a", "b"])),
                                  "--val-dir", str(image_folder(t / "c" / "val", ["a", "z"]))], "z"),
    "effective batch does not divide as planned": (
        lambda t: ["--config", job_yaml(t, {"data": "synthetic", "batch_size": 64, "batches_per_allreduce": 2},
                                        {"effective_batch": 256, "gpus": 2})],
        "plan.effective_batch 256 != batch_size 64 x 1 workers x batches_per_allreduce 2 = 128"),
    "batch larger than the data set": (
        lambda t: ["--data", "synthetic", "--synthetic-length", "16", "--batch-size", "32"], "synthetic_length"),
    "unknown model": (lambda t: ["--data", "synthetic", "--model", "resnet9000"], "resnet9000"),
    "unknown job.yaml key": (lambda t: ["--config", job_yaml(t, {"data": "synthetic", "lerning_rate": 1})],
                             "lerning_rate: unknown trainer option"),
}


def mk(path):
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(case, tmp_path):
    make_args, needle = CASES[case]
    code, err = trainer(BASE + make_args(tmp_path), tmp_path)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("trainer: error: ") and needle in lines[0], lines[0]
