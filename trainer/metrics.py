"""Rank 0's outputs: metrics.jsonl (larsctl reads it), TensorBoard events, progress.

metrics.jsonl gets one JSON object per line, appended and flushed line by line:
  {"kind": "train", "time", "epoch", "step", "total_steps", "steps_per_epoch", "loss",
   "accuracy", "lr", "images_per_sec", "effective_batch",
   "batch_digest" (ImageFolder data: a digest of the global sample indices of the step the record
   is at, the same for that step on any split of the effective batch over ranks and
   micro-batches; absent for DALI and synthetic data, whose order is their own),
   and, when the gradient noise scale is measured (trainer/gns.py; off with
   --no-noise-scale, and not measurable with one rank and k = 1):
   "gns_small_sq", "gns_big_sq", "gns_steps", "gns_b_small", "gns_b_big", "gns_data_size",
   "gns_grad_sq", "gns_trace_sigma", "noise_scale", "gns_precond_small_sq", "gns_precond_big_sq",
   "gns_precond_grad_sq", "gns_precond_trace_sigma", "noise_scale_lars"} (trainer.gns.FIELDS)
  {"kind": "val", "time", "epoch", "step", "loss", "accuracy", "top5"}
  {"kind": "event", "time", "event": start|resume|checkpoint|preempted|cancelled|diverged|done,
   "step", "epoch", optional "path", "message", and for resume "skipped" (newer checkpoints
   that did not verify: [[path, why], ...]) and "shape" (ranks, per-rank batch, k)}
  The gns fields of a record cover the logging window that ends at its step (the
  log_every_steps steps since the previous train record; only every noise_scale_every-th
  step is measured):
    gns_small_sq     mean |G_s|^2 of the small batches (one micro-batch of one rank),
                     over ranks, micro-batches and the window's valid steps
    gns_big_sq       mean |G_b|^2 of the reduced gradient over the window's valid steps
    gns_steps        valid measured steps in the window (inf/NaN steps are skipped); the means
                     are null when it is 0; weight windows by it to pool them
    gns_b_small      B_s = batch_size;  gns_b_big  B_b = batch_size x ranks x k
    gns_data_size    training samples N of the without-replacement correction (null: none)
    gns_grad_sq      |G|^2 from the bias-corrected EMAs (decay trainer.gns.EMA_DECAY per optimizer
                     step: EMA_DECAY**noise_scale_every per measured step)
    gns_trace_sigma  tr(Sigma) likewise
    noise_scale      B_simple = gns_trace_sigma / gns_grad_sq (null while gns_grad_sq <= 0)
  and the same with the LARS preconditioner P (each parameter tensor's gradient times the
  trust ratio the Lars step applies to it, from the reduced gradient; docs/lars-noise-scale.md),
  null unless the optimizer is LARS (base_op lars):
    gns_precond_small_sq     mean |P G_s|^2, like gns_small_sq
    gns_precond_big_sq       mean |P G_b|^2, like gns_big_sq
    gns_precond_grad_sq      |P G|^2 from the EMAs
    gns_precond_trace_sigma  tr(P Sigma P) from the EMAs
    noise_scale_lars         B_simple of the LARS update = tr(P Sigma P) / |P G|^2 (null while
                             gns_precond_grad_sq <= 0)
  Norms are of the loss gradient: before clipping, weight decay and with the AMP loss
  scale removed.  With log_every_steps 1 (and noise_scale_every 1) the window values are
  per step.
  trainer.gns.read_train_records() extracts these fields and trainer.gns.pooled() turns the
  windows of several records into one estimate.  The EMAs continue across a resume (they
  are checkpointed).
TensorBoard tags: train/loss, train/accuracy, train/lr, train/images_per_sec,
train/noise_scale and train/noise_scale_lars (when measured and defined), val/loss, val/accuracy, val/top5, with the
optimizer step as global step.
Other ranks get a MetricsLogger with enabled=False, which writes nothing.
With a tracker (trainer/tracking: rank 0 of a job whose job.yaml has a tracking: section), every
line written wakes its side thread, which sends metrics.jsonl on from there.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

EVENTS = ("start", "resume", "checkpoint", "preempted", "cancelled", "diverged", "done")


class MetricsLogger:
    def __init__(self, jsonl_path: Path, tensorboard_dir: Path, enabled: bool, tracker=None):
        self.enabled = enabled
        self._file = None
        self._writer = None
        self._tracker = tracker  # trainer.tracking.sender.Tracker, or None
        if not enabled:
            return
        jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(jsonl_path, "a", encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: rank 0 only

        self._writer = SummaryWriter(log_dir=str(tensorboard_dir))

    def _line(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if record["kind"] == "event":  # events mark resumable points: make them durable
            os.fsync(self._file.fileno())
        if self._tracker is not None:
            self._tracker.poke()

    def event(self, event: str, step: int, epoch: float, **extra: Any) -> None:
        assert event in EVENTS, event
        if not self.enabled:
            return
        self._line({"kind": "event", "time": time.time(), "event": event, "step": step, "epoch": epoch,
                    **{k: v for k, v in extra.items() if v is not None}})

    def train(self, *, epoch: float, step: int, total_steps: int, steps_per_epoch: int, loss: float,
              accuracy: float, lr: float, images_per_sec: float, effective_batch: int,
              gns: Mapping[str, Any] | None = None, batch_digest: str | None = None) -> None:
        """``gns``: the gradient noise scale fields (trainer.gns.GradientNoiseScale.fields), if measured;
        ``batch_digest``: the digest of the samples of this step (trainer.data.sampling)."""
        if not self.enabled:
            return
        record = {"kind": "train", "time": time.time(), "epoch": epoch, "step": step,
                  "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "loss": loss,
                  "accuracy": accuracy, "lr": lr, "images_per_sec": images_per_sec,
                  "effective_batch": effective_batch}
        if batch_digest is not None:
            record["batch_digest"] = batch_digest
        if gns is not None:
            record.update(gns)
        self._line(record)
        for tag, value in (("loss", loss), ("accuracy", accuracy), ("lr", lr), ("images_per_sec", images_per_sec)):
            self._writer.add_scalar(f"train/{tag}", value, step)
        for tag in ("noise_scale", "noise_scale_lars"):
            if gns is not None and gns.get(tag) is not None:
                self._writer.add_scalar(f"train/{tag}", gns[tag], step)

    def val(self, *, epoch: float, step: int, loss: float, accuracy: float, top5: float) -> None:
        if not self.enabled:
            return
        self._line({"kind": "val", "time": time.time(), "epoch": epoch, "step": step, "loss": loss,
                    "accuracy": accuracy, "top5": top5})
        for tag, value in (("loss", loss), ("accuracy", accuracy), ("top5", top5)):
            self._writer.add_scalar(f"val/{tag}", value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        if self._tracker is not None:  # after the last line: it sends the rest and ends the segment
            self._tracker.close()


class Progress:
    """A tqdm bar on a terminal; plain `key=value` lines in batch logs (rank 0 only)."""

    def __init__(self, enabled: bool, total: int, initial: int):
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, **fields: Any) -> None:
        if not self.enabled:
            return
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text, refresh=True)
        else:
            print(f"trainer: step={step} {text}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"trainer: {text}", file=sys.stderr)
        else:
            print(f"trainer: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
