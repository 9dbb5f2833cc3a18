"""The real trainer under the real launchers: 2 CPU ranks on the digits data set, both layouts.

- horovodrun --gloo (Horovod), ImageFolder: LARS at effective batch 2 x 64 x 2 = 256 learns
  the digits (validation accuracy asserted), TensorBoard files read back with TensorBoard's
  own reader, metrics.jsonl schema.
- torchrun (ddp) and mpirun (ddp ranks from OMPI_COMM_WORLD_*), DALI TFRecord layout.
(mpirun + Horovod runs in test_resume.py.)
"""
from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.trainer.helpers import TINY, events, records, run
from trainer.gns import FIELDS as GNS_FIELDS

pytestmark = pytest.mark.slow

TRAIN_KEYS = {"kind", "time", "epoch", "step", "total_steps", "steps_per_epoch", "loss", "accuracy", "lr",
              "images_per_sec", "effective_batch"}
VAL_KEYS = {"kind", "time", "epoch", "step", "loss", "accuracy", "top5"}
TAGS = {"train/loss", "train/accuracy", "train/lr", "train/images_per_sec", "train/noise_scale", "val/loss",
        "val/accuracy", "val/top5"}


def check_outputs(out, effective_batch, digests=False):
    recs = records(out)
    train = [r for r in recs if r["kind"] == "train"]
    val = [r for r in recs if r["kind"] == "val"]
    assert train and val
    # 2 ranks (or k >= 2): the gradient noise scale is measured, its fields in every train record.
    # ImageFolder data (not DALI's): the digest of each step's samples (resume on another shape).
    assert all(set(r) == TRAIN_KEYS | set(GNS_FIELDS) | ({"batch_digest"} if digests else set()) for r in train)
    assert all(set(r) == VAL_KEYS for r in val)
    assert all(r["effective_batch"] == effective_batch for r in train)
    assert [r["step"] for r in train] == sorted(r["step"] for r in train)
    assert events(out, "start") and events(out, "done") and events(out, "checkpoint")
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert TAGS <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [r["step"] for r in train]
    assert acc.Scalars("val/accuracy")[-1].value == pytest.approx(val[-1]["accuracy"])
    return train, val


def test_horovodrun_gloo_lars_at_batch_256_learns_digits(tmp_path, horovod):
    out, log = tmp_path / "job", tmp_path / "log"
    args = TINY + ["--dataset", "digits", "--data", "imagefolder", "--batch-size", "64",
                   "--batches-per-allreduce", "2", "--base-op", "lars", "--base-lr", "2", "--warmup-epochs", "1.5",
                   "--epochs", "6", "--bn-bias-separately", "--log-every-steps", "5", "--val-batch-size", "128",
                   "--out-dir", str(out)]
    assert run("horovodrun", 2, args, log, timeout=600) == 0, log.read_text()[-3000:]
    train, val = check_outputs(out, effective_batch=256, digests=True)
    assert train[-1]["step"] == train[-1]["total_steps"] == 6 * train[-1]["steps_per_epoch"] == 30
    # 30 optimizer steps of LARS; chance is 10 %.  (This seed reaches ~78 %.)
    assert val[-1]["accuracy"] >= 0.5, val
    assert val[-1]["top5"] >= 0.85, val


@pytest.mark.parametrize("launcher", ["torchrun", "mpirun-ddp"])
def test_ddp_on_the_dali_tfrecord_layout(tmp_path, launcher):
    out, log = tmp_path / "job", tmp_path / "log"
    args = TINY + ["--dataset", "digits", "--data", "dali", "--batch-size", "32", "--batches-per-allreduce", "2",
                   "--epochs", "2", "--warmup-epochs", "0.5", "--base-lr", "1", "--max-steps", "4",
                   "--log-every-steps", "2", "--val-batch-size", "128", "--out-dir", str(out)]
    assert run(launcher, 2, args, log, timeout=300) == 0, log.read_text()[-3000:]
    train, val = check_outputs(out, effective_batch=128)
    assert [r["step"] for r in train] == [2, 4]
    assert val[-1]["step"] == 4
    assert "rank" not in log.read_text().lower() or "Traceback" not in log.read_text()
