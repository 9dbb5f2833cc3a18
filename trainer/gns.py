"""The gradient noise scale, measured during a normal data-parallel run (on by default;
``--no-noise-scale`` turns it off).

McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training"
(arXiv 1812.06162), appendix A.1.  With G the true (full-data) gradient and Sigma the
per-example gradient covariance, the expected squared norm of the mean gradient of a
batch of B examples is |G|^2 + tr(Sigma)/B.  Two batch sizes at the same weights, a
small one (B_s, gradient G_s) and a big one (B_b, G_b), give unbiased estimates

    |G|^2     ~ (B_b |G_b|^2 - B_s |G_s|^2) / (B_b - B_s)
    tr(Sigma) ~ (|G_s|^2 - |G_b|^2) / (1/B_s - 1/B_b)

and the "simple" noise scale B_simple = tr(Sigma) / |G|^2, the paper's estimate of the
critical batch size (beyond it, a bigger batch saves fewer and fewer steps).  Each estimate
is unbiased; their ratio is not (and is very noisy per step), so the trainer keeps an
exponential moving average of each
(decay EMA_DECAY per optimizer step, bias-corrected like Adam's moments: divided by
1 - decay^n after n averaged steps) and reports B_simple = EMA(tr Sigma) / EMA(|G|^2).

Both batches come for free from data parallelism
------------------------------------------------
Big batch: the reduced gradient of an optimizer step, B_b = ranks x k x b (k =
batches_per_allreduce, b = batch_size), which every rank holds after the allreduce.
Small batch: one micro-batch of one rank, B_s = b.  A step has ranks x k of them; their
squared norms are averaged (over micro-batches and ranks) before use.  With one rank and
k > 1 the micro-batches are the small batches; with several ranks and k = 1 each rank's
gradient is one.  One rank with k = 1 has only one batch size: nothing is measured (the
run says so once).  Micro-batches rather than a rank's accumulated k x b gradient: the
same cost, ranks x k small batches per step instead of ranks, and a larger B_b/B_s, both
of which lower the variance of the estimate.

Where the norms are taken (the same code for ddp and Horovod)
-------------------------------------------------------------
* Small: a tensor hook on every parameter (``p.register_hook``).  For a leaf tensor such
  a hook runs in the backward pass *before* the gradient is accumulated into ``p.grad``
  (it is a pre-hook of the parameter's AccumulateGrad node), and it receives exactly this
  micro-batch's contribution (loss/k, times the loss scale).  DDP's reducer and
  Horovod's DistributedOptimizer both hook the *same node after* accumulation: DDP's
  reducer fills its buckets and allreduces them in place (p.grad is a bucket view,
  ``gradient_as_bucket_view``), Horovod
  allreduces ``p.grad`` in place after the k-th backward pass
  (``backward_passes_per_step=k``) and ``no_sync`` only disables DDP's part.  So the
  pre-hook sees every micro-batch's own gradient before any reduction can overwrite it,
  on every engine, without differencing accumulated gradients.  That is the cheapest
  correct way: differencing (micro-batch i = p.grad after pass i - p.grad after pass i-1)
  needs a copy of the whole gradient per pass (memory and bandwidth), while the pre-hook
  reads each gradient once, as it is produced, and keeps one scalar per parameter (a
  ``vector_norm`` launched from the hook: the norms are stacked once at the end of the
  step, no gradient is retained and nothing waits for the device).  Parameters that do
  not require gradients are not hooked; the hooks are removed when the run ends.
* Big: after the reduction and before anything modifies the gradient, through the
  callback ``reduced`` of ``Engine.optimizer_step``: for ddp right after the last
  backward pass (DDP has finished its allreduce when backward returns), for Horovod
  between ``optimizer.synchronize()`` and the (skip-synchronize) step.  This is before
  the GradScaler unscales, before any clipping (LARS ``nus`` clamps the gradient inside
  its step) and before weight decay (LARS adds wd*w inside its step): the estimator sees
  the loss gradient only.  One ``get_total_norm`` (multi-tensor) per step.
* AMP fp16: both norms are of loss-scaled gradients; the scale of the step (a device
  tensor, ``scaler.scale(1)`` taken before the step, so no host sync) is divided out
  before squaring.  bf16 has no scaler and nothing to remove.

Skipped steps: a step whose values are not finite (fp16 overflow, NaN) is left out of
the averages (a 0/1 weight on the device, no host sync).  Any rank's inf/NaN reaches the
reduced gradient (sums propagate it), so every rank skips the same steps.

Cost: no extra gradient communication and no per-step collective or host sync.  Per
step each rank adds into a 6-element device tensor (window sums and EMAs of its own
micro-batch sum, of the big norm, and of the step weight).  Everything here is linear
in the per-rank values, so the EMA of the rank average is the rank sum of per-rank EMAs
/ ranks: these 6 numbers ride in the small allreduce the loop already makes on logging
steps (metrics + stop flag), every ``log_every_steps`` steps.  The device work is k + 1
reads of the gradient per step (a norm of each micro-batch's gradient, one of the reduced
gradient) plus one small kernel per parameter and micro-batch, whatever the batch size,
so its share of the step falls as the step's compute per parameter grows.  Measured by
bench/bench_gns.py (the same step without the estimator; ResNet-18, 1 rank x k=2 x 32,
one CPU thread): 1.8% of the step at 32 px images (the norms are memory-bound passes
over a 45 MiB gradient; the backward pass has little compute per parameter at 32 px),
1.1% at 64 px, 0.3% at 128 px; at ImageNet sizes, and on a GPU (three passes over the
gradient at TB/s), far below 1%.

Finite data (sampling without replacement)
------------------------------------------
Within an epoch a step's samples are drawn without replacement from the N training
samples.  Then E|G_B|^2 = |G|^2 + tr(Sigma) (N - B) / (B (N - 1)) with Sigma the
population covariance (1/N), so the |G|^2 estimator above is low by tr(Sigma)/(N - 1)
and the tr(Sigma) estimator is high by N/(N - 1).  With S the tr(Sigma) estimate,
``|G|^2 + S/N`` and ``S (N - 1)/N`` are unbiased again; the correction matters when B_b
or B_simple is not small against N (tests/gns checks it on a finite population).  It is
applied with N = the training samples of the data set; ``--data synthetic`` repeats one
fixed batch per rank, where no noise scale is meaningful (values are logged, uncorrected,
for the cost only).  With augmentation the population is the augmented one.

BatchNorm
---------
BatchNorm normalises with the statistics of the per-device micro-batch, so an example's
gradient depends on its batch-mates: per-example gradients are not defined, and the
smallest unit is the per-device BN batch b.  The small batches here are exactly such
units (never split), and the big gradient is the mean of them, so the estimate is
consistent; it is the noise scale of the BN-batch-gradient process measured in samples
and moves when b does.  GroupNorm (``--norm group``) or no normalisation give a noise
scale of per-example gradients (tests/gns compares it with exact per-example values).

What a train record of metrics.jsonl gets (trainer/metrics.py)
---------------------------------------------------------------
``gns_small_sq`` mean |G_s|^2 and ``gns_big_sq`` mean |G_b|^2 over the valid steps of the
logging window (``gns_steps`` of them; small also over ranks and micro-batches; null when
no step was valid), ``gns_b_small``, ``gns_b_big``, ``gns_data_size`` (N, null when not
corrected), and from the EMAs at this step ``gns_grad_sq`` (|G|^2), ``gns_trace_sigma``
(tr Sigma) and ``noise_scale`` (their ratio; null while EMA |G|^2 <= 0).  The window
means are raw and linear, so a reader can recompute any other average:
``estimates(small, big, b_small, b_big, data_size)`` applied to gns_steps-weighted means.
Checkpoints carry every rank's six sums (``GradientNoiseScale.saved``, gathered by the
trainer at checkpoint time, never on the step path), so a run resumed on the same shape
writes the same values as one that never stopped.  Resumed on another shape (other ranks,
k or micro-batch size), the averages are carried over through what they estimate:
(|G|^2, tr Sigma) give the expected squared norms at the new batch sizes
(``GradientNoiseScale.restore``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

EMA_DECAY = 0.99  # per optimizer step: about 100 steps of memory
STATE_SIZE = 6  # window sums of (small, big, steps), then their EMAs
# The fields a metrics.jsonl train record gets when the noise scale is measured.
FIELDS = ("gns_small_sq", "gns_big_sq", "gns_steps", "gns_b_small", "gns_b_big", "gns_data_size",
          "gns_grad_sq", "gns_trace_sigma", "noise_scale")


def estimates(small_sq: float, big_sq: float, b_small: int, b_big: int,
              data_size: int | None = None) -> tuple[float, float]:
    """Unbiased (|G|^2, tr Sigma) from E|G_s|^2 and E|G_b|^2 at batch sizes b_small < b_big.

    ``data_size`` N: the batches are drawn without replacement from N samples (one
    epoch); |G|^2 gets tr(Sigma)/(N - 1) back and tr(Sigma) is the population one.
    """
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got {b_small}, {b_big}")
    grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    if data_size is not None:
        if data_size < b_big:
            raise ValueError(f"data_size {data_size} < b_big {b_big}")
        grad_sq += trace / data_size
        trace *= (data_size - 1) / data_size
    return grad_sq, trace


def simple_noise_scale(grad_sq: float, trace: float) -> float | None:
    """B_simple = tr(Sigma) / |G|^2; None when |G|^2 is not positive (noise dominates the estimate)."""
    if not (grad_sq > 0 and math.isfinite(grad_sq) and math.isfinite(trace)):
        return None
    return trace / grad_sq


class Accumulator:
    """One rank's device-side sums; `state` is summed over ranks on logging steps.

    ``add(small_sum, big_sq)`` per optimizer step, where small_sum is the sum over this
    rank's ``micro`` micro-batches of |G_s|^2 and big_sq is |G_b|^2 (the same on every
    rank): 0-d device tensors, nothing is read back.  ``state`` = [window sum of small_sum,
    window sum of big_sq, window steps, EMA of small_sum, EMA of big_sq, EMA weight].
    """

    def __init__(self, device: torch.device | str = "cpu", decay: float = EMA_DECAY):
        if not 0 <= decay < 1:
            raise ValueError(f"decay: expected 0 <= decay < 1, got {decay}")
        self.decay = decay
        self.state = torch.zeros(STATE_SIZE, dtype=torch.float32, device=device)
        self._one = torch.ones((), dtype=torch.float32, device=device)
        self._zero = torch.zeros(3, dtype=torch.float32, device=device)

    def add(self, small_sum: torch.Tensor, big_sq: torch.Tensor) -> None:
        x = torch.stack([small_sum.float(), big_sq.float(), self._one])
        valid = torch.isfinite(x).all()
        x = torch.where(valid, x, self._zero)
        self.state[:3] += x
        self.state[3:].lerp_(x, valid.float() * (1.0 - self.decay))

    def reset_window(self) -> None:
        self.state[:3].zero_()


def summarize(totals: Sequence[float], *, ranks: int, micro: int, b_small: int, b_big: int,
              data_size: int | None) -> dict[str, Any]:
    """The metrics.jsonl fields from ``Accumulator.state`` summed over ``ranks`` ranks.

    ``micro``: micro-batches per rank per step (k; each rank's small_sum covers k of them).
    """
    win_small, win_big, win_steps, ema_small, ema_big, ema_weight = (float(v) for v in totals)
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out.update(gns_steps=int(round(win_steps / ranks)), gns_b_small=b_small, gns_b_big=b_big, gns_data_size=data_size)
    if win_steps > 0:  # win_steps = ranks x valid steps
        out["gns_small_sq"] = win_small / (micro * win_steps)
        out["gns_big_sq"] = win_big / win_steps
    if ema_weight > 0:  # bias correction: ema_weight = ranks x (1 - decay^n)
        grad_sq, trace = estimates(ema_small / (micro * ema_weight), ema_big / ema_weight, b_small, b_big,
                                   data_size)
        out["gns_grad_sq"], out["gns_trace_sigma"] = grad_sq, trace
        out["noise_scale"] = simple_noise_scale(grad_sq, trace)
    return out


class GradientNoiseScale:
    """The estimator of one rank: hooks on the model's parameters plus an Accumulator.

        gns = GradientNoiseScale(model, batch_size=b, ranks=W, micro=k, data_size=N, device=dev)
        # per optimizer step (trainer.loop.train_step):
        gns.begin_step(scaler)          # before the first backward pass of the step
        ... k backward passes ...       # the hooks record each micro-batch's norms
        engine.optimizer_step(optimizer, scaler, reduced=gns.after_reduce)
        # on logging steps (trainer.run): gns.payload() rides in the metrics allreduce,
        fields = gns.fields(summed_payload)   # and resets the window

    Build it only when ``measurable(W, k)``.
    """

    def __init__(self, model: torch.nn.Module, *, batch_size: int, ranks: int, micro: int,
                 data_size: int | None, device: torch.device | str, decay: float = EMA_DECAY):
        if not measurable(ranks, micro):
            raise ValueError("one rank with one micro-batch per step has a single batch size: nothing to measure")
        self.b_small, self.ranks, self.micro = batch_size, ranks, micro
        self.b_big = batch_size * ranks * micro
        self.data_size = data_size if data_size is not None and data_size >= self.b_big else None
        self.acc = Accumulator(device, decay)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._norms: list[torch.Tensor] = []
        self._recording = False
        self._inv_scale: torch.Tensor | None = None
        self._handles = [p.register_hook(self._hook) for p in self.params]

    def _hook(self, grad: torch.Tensor) -> None:
        if self._recording:
            self._norms.append(torch.linalg.vector_norm(grad, dtype=torch.float32))

    def begin_step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        """Start recording; remembers the loss scale of this step (a device tensor, no sync)."""
        self._norms.clear()
        self._inv_scale = None
        if scaler is not None and scaler.is_enabled():
            # scaler.scale(x) = x * scale: the scale as a device tensor, without .item().
            one = torch.ones((), dtype=torch.float32, device=self.acc.state.device)
            self._inv_scale = scaler.scale(one).reciprocal()
        self._recording = True

    def after_reduce(self) -> None:
        """Called once the reduced gradient is in p.grad, before unscaling, clipping or the step."""
        self._recording = False
        grads = [p.grad for p in self.params if p.grad is not None]
        if not self._norms or not grads:
            self._norms.clear()
            return
        small = torch.linalg.vector_norm(torch.stack(self._norms))
        self._norms.clear()
        # each micro-batch's loss was divided by k: its own mean gradient is k x what the hook saw
        big = torch.nn.utils.get_total_norm(grads, norm_type=2.0).to(small.device, torch.float32)
        norms = torch.stack([small * self.micro, big])
        if self._inv_scale is not None:
            norms = norms * self._inv_scale
        small_sum, big_sq = norms.square().unbind()
        self.acc.add(small_sum, big_sq)

    def payload(self) -> torch.Tensor:
        """This rank's state (float32, like the metrics it rides with), to be summed over ranks."""
        return self.acc.state

    def fields(self, totals: Sequence[float] | torch.Tensor) -> dict[str, Any]:
        """metrics.jsonl fields from the rank-summed payload; starts a new logging window."""
        if isinstance(totals, torch.Tensor):
            totals = totals.tolist()
        out = summarize(totals, ranks=self.ranks, micro=self.micro, b_small=self.b_small, b_big=self.b_big,
                        data_size=self.data_size)
        self.acc.reset_window()
        return out

    def saved(self, rows: torch.Tensor) -> dict[str, Any]:
        """What a checkpoint keeps: ``rows`` [ranks, STATE_SIZE], every rank's ``payload()`` in its
        own row (summed over ranks by the caller), and the shape they were measured with."""
        return {"rows": rows.detach().cpu().float(), "ranks": self.ranks, "micro": self.micro,
                "b_small": self.b_small, "b_big": self.b_big, "data_size": self.data_size,
                "decay": self.acc.decay}

    def restore(self, saved: Mapping[str, Any], rank: int) -> str:
        """Continue from a checkpoint's ``saved()``; returns how (for the run's log).

        Same shape: this rank takes its own row back, bit for bit.  Another shape: the
        window starts empty and the moving averages are carried over through their
        estimates: (|G|^2, tr Sigma) at the old batch sizes give E|G_s|^2 and E|G_b|^2 at
        the new ones, held by rank 0 (the averages are sums over ranks).
        """
        rows = saved["rows"].to(self.acc.state.device, torch.float32)
        same = (saved["ranks"], saved["micro"], saved["b_small"]) == (self.ranks, self.micro, self.b_small)
        if same and rows.shape[0] == self.ranks and saved.get("decay") == self.acc.decay:
            self.acc.state.copy_(rows[rank])
            return "noise-scale averages restored"
        total = rows.sum(0).tolist()
        ema_small, ema_big, weight = total[3], total[4], total[5]
        self.acc.state.zero_()
        if weight <= 0:
            return "noise-scale averages restarted (none saved yet)"
        grad_sq, trace = estimates(ema_small / (saved["micro"] * weight), ema_big / weight, saved["b_small"],
                                   saved["b_big"], saved.get("data_size"))
        n = self.data_size
        raw_trace = trace * n / (n - 1) if n else trace  # undo the finite-data correction
        raw_grad = grad_sq - raw_trace / n if n else grad_sq
        new_weight = weight / saved["ranks"] * self.ranks  # ranks x (1 - decay^steps)
        if rank == 0:
            self.acc.state[3] = (raw_grad + raw_trace / self.b_small) * self.micro * new_weight
            self.acc.state[4] = (raw_grad + raw_trace / self.b_big) * new_weight
            self.acc.state[5] = new_weight
        return (f"noise-scale averages carried over from {saved['ranks']} ranks x k={saved['micro']} x "
                f"{saved['b_small']}")

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def measurable(ranks: int, micro: int) -> bool:
    """Two batch sizes need two ranks or two micro-batches per step."""
    return ranks * micro > 1


def read_train_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-logged-step gns values (step, epoch and FIELDS) of the metrics.jsonl train
    records that have them (parsed JSON objects, in file order)."""
    return [{k: r.get(k) for k in ("step", "epoch") + FIELDS} for r in records
            if r.get("kind") == "train" and "gns_b_big" in r]


def pooled(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One estimate from the windows of several train records (e.g. an epoch, or a whole run
    at a fixed batch size): their gns_steps-weighted mean norms through ``estimates``.

    Returns {"steps", "grad_sq", "trace_sigma", "noise_scale"}, or None without valid steps.
    Pooling assumes the weights moved little over the records (as the EMA does over ~100 steps).
    """
    rows = [r for r in rows if r.get("gns_steps")]
    if not rows:
        return None
    sizes = {(r["gns_b_small"], r["gns_b_big"], r["gns_data_size"]) for r in rows}
    if len(sizes) > 1:
        raise ValueError(f"records of different batch or data sizes: {sorted(sizes, key=str)}")
    (b_small, b_big, data_size), = sizes
    steps = sum(r["gns_steps"] for r in rows)
    small = sum(r["gns_small_sq"] * r["gns_steps"] for r in rows) / steps
    big = sum(r["gns_big_sq"] * r["gns_steps"] for r in rows) / steps
    grad_sq, trace = estimates(small, big, b_small, b_big, data_size)
    return {"steps": steps, "grad_sq": grad_sq, "trace_sigma": trace, "noise_scale": simple_noise_scale(grad_sq, trace)}
