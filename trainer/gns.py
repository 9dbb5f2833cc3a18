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
  the loss gradient only.  One multi-tensor norm (``_foreach_norm``, a norm per parameter)
  per measured step.
* AMP fp16: both norms are of loss-scaled gradients; the scale of the step (a device
  tensor, ``scaler.scale(1)`` taken before the step, so no host sync) is divided out
  before squaring.  bf16 has no scaler and nothing to remove.

Skipped steps: a step whose values are not finite (fp16 overflow, NaN) is left out of
the averages (a 0/1 weight on the device, no host sync).  Any rank's inf/NaN reaches the
reduced gradient (sums propagate it), so every rank skips the same steps.

Cost: no extra gradient communication and no per-step collective or host sync.  Per
measured step each rank adds into a 12-element device tensor (window sums and EMAs of its
own micro-batch sum, of the big norm and of the step weight, plain and LARS-preconditioned).
Everything here is linear in the per-rank values, so the EMA of the rank average is the
rank sum of per-rank EMAs / ranks: these numbers ride in the small allreduce the loop
already makes on logging steps (metrics + stop flag), every ``log_every_steps`` steps.
The device work of a measured step is k + 1 reads of the gradient (a norm of each
micro-batch's gradient per parameter, one of the reduced gradient) plus, with Lars, one
read of the weights (their norms, for the trust ratios), and a small kernel per parameter
and micro-batch, whatever the batch size, so its share of the step falls as the step's
compute per parameter grows.  bench/bench_gns.py (ResNet-18 at 32 px, 1 rank x k=2 x 32,
Lars, one CPU thread; bench/RESULTS.md) puts a measured step's work at about 4% of the
step's CPU time on the 2026-12-03 machine (1.9% the hooks' norms, 2.2% after_reduce with
the norms of the reduced gradient and of the weights: memory-bound passes over 45 MiB,
against a 32 px backward pass with little compute per parameter); at ImageNet sizes and on
a GPU the share is far smaller.  Hence ``every`` (the trainer's ``--noise-scale-every``,
default 8): only steps whose number is a multiple of it are measured; on the others the
hooks return at once and after_reduce does nothing, so the cost is divided by ``every``
(0.5% of the step at 8 there, under the 1% target).  The EMA decay is EMA_DECAY**every per
measured step, so the averages still span about 100 optimizer steps (the weights move as
much over them as before) but hold ``every`` times fewer samples: the estimate's standard
error grows by about sqrt(every) (bench/bench_gns.py prints it for 1 and ``every``).

The LARS noise scale
--------------------
Lars scales each parameter tensor's update by its trust ratio p_l, a preconditioner P that
is a scalar per tensor.  The noise scale of that update is tr(P Sigma P) / |P G|^2
(docs/lars-noise-scale.md derives it and states its assumptions: P is the trust ratio the
step computes from the reduced gradient, held fixed for the step; H a multiple of the
identity, as for B_simple).  At a fixed P the two-batch estimates above hold for |P G_s|^2
and |P G_b|^2 unchanged.  So the hooks keep one norm per parameter and micro-batch (not
their sum), after_reduce takes the reduced gradient's norm per parameter, computes the trust
ratios of the step from those and the weights' norms with the optimizer's own formula
(``trainer.optim.lars.group_trust_ratios``, the group settings read at each step) and adds
sum_l p_l^2 |G_s,l|^2 and sum_l p_l^2 |G_b,l|^2 to a second block of the same sums and EMAs.
Only for optimizers in PRECONDITIONED (Lars); the fields are null otherwise.

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
``gns_small_sq`` mean |G_s|^2 and ``gns_big_sq`` mean |G_b|^2 over the valid measured steps
of the logging window (``gns_steps`` of them; small also over ranks and micro-batches; null
when no step was valid), ``gns_b_small``, ``gns_b_big``, ``gns_data_size`` (N, null when not
corrected), and from the EMAs at this step ``gns_grad_sq`` (|G|^2), ``gns_trace_sigma``
(tr Sigma) and ``noise_scale`` (their ratio; null while EMA |G|^2 <= 0); then the same five
with P for Lars (``PRECOND_FIELDS``: ``gns_precond_small_sq``, ``gns_precond_big_sq``,
``gns_precond_grad_sq``, ``gns_precond_trace_sigma``, ``noise_scale_lars``; null otherwise).
The window means are raw and linear, so a reader can recompute any other average:
``estimates(small, big, b_small, b_big, data_size)`` applied to gns_steps-weighted means.
Checkpoints carry every rank's sums (``GradientNoiseScale.saved``, gathered by the
trainer at checkpoint time, never on the step path), so a run resumed on the same shape
writes the same values as one that never stopped.  Resumed on another shape (other ranks,
k, micro-batch size or ``every``), the averages are carried over through what they
estimate: (|G|^2, tr Sigma) give the expected squared norms at the new batch sizes
(``GradientNoiseScale.restore``).  Checkpoints from before the LARS noise scale hold
BLOCK = 6 sums per rank: the plain block is restored, the LARS one starts empty.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import torch

from trainer.optim._common import foreach_norms
from trainer.optim.lars import Lars, group_trust_ratios

EMA_DECAY = 0.99  # per optimizer step: about 100 steps of memory
# Accumulator.state: two blocks of BLOCK numbers, the plain sums then the preconditioned
# (LARS) ones, each = window sums of (small, big, steps), then their EMAs.  Checkpoints
# written before the preconditioned block existed hold the plain block only.
BLOCK = 6
STATE_SIZE = 2 * BLOCK
# Optimizers whose update is a per-tensor scale of the gradient (the trust ratio), for which
# the preconditioned noise scale is measured (docs/lars-noise-scale.md; LAMB's update
# divides by Adam's second moment elementwise: not a per-tensor scale, not measured).
PRECONDITIONED = (Lars,)
# The fields a metrics.jsonl train record gets when the noise scale is measured.
PLAIN_FIELDS = ("gns_small_sq", "gns_big_sq", "gns_grad_sq", "gns_trace_sigma", "noise_scale")
PRECOND_FIELDS = ("gns_precond_small_sq", "gns_precond_big_sq", "gns_precond_grad_sq", "gns_precond_trace_sigma",
                  "noise_scale_lars")
FIELDS = ("gns_small_sq", "gns_big_sq", "gns_steps", "gns_b_small", "gns_b_big", "gns_data_size",
          "gns_grad_sq", "gns_trace_sigma", "noise_scale") + PRECOND_FIELDS


def estimates(small_sq: float, big_sq: float, b_small: int, b_big: int,
              data_size: int | None = None) -> tuple[float, float]:
    """Unbiased (|G|^2, tr Sigma) from E|G_s|^2 and E|G_b|^2 at batch sizes b_small < b_big.

    ``data_size`` N: the batches are drawn without replacement from N samples (one
    epoch); |G|^2 gets tr(Sigma)/(N - 1) back and tr(Sigma) is the population one.
    The same holds for preconditioned norms |P G_s|^2, |P G_b|^2 at a fixed P: they give
    (|P G|^2, tr(P Sigma P)).
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

    ``add(small_sum, big_sq, precond)`` per measured optimizer step, where small_sum is the
    sum over this rank's ``micro`` micro-batches of |G_s|^2 and big_sq is |G_b|^2 (the same
    on every rank), and ``precond`` the same two with the LARS preconditioner applied
    (|P G_s|^2 summed, |P G_b|^2), or None: 0-d device tensors, nothing is read back.
    ``state`` = the plain block [window sum of small_sum, window sum of big_sq, window
    steps, EMA of small_sum, EMA of big_sq, EMA weight], then the preconditioned block
    likewise (all zero while nothing preconditioned is added).  A step with any non-finite
    value is left out of both blocks.
    """

    def __init__(self, device: torch.device | str = "cpu", decay: float = EMA_DECAY):
        if not 0 <= decay < 1:
            raise ValueError(f"decay: expected 0 <= decay < 1, got {decay}")
        self.decay = decay
        self.state = torch.zeros(STATE_SIZE, dtype=torch.float32, device=device)
        self._blocks = self.state.view(2, 2, 3)  # [plain|precond, window|EMA, (small, big, steps)]
        self._one = torch.ones((), dtype=torch.float32, device=device)
        self._none = torch.zeros(3, dtype=torch.float32, device=device)
        self._zero = torch.zeros(2, 3, dtype=torch.float32, device=device)

    def add(self, small_sum: torch.Tensor, big_sq: torch.Tensor,
            precond: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        plain = torch.stack([small_sum.float(), big_sq.float(), self._one])
        second = self._none if precond is None else torch.stack([precond[0].float(), precond[1].float(), self._one])
        x = torch.stack([plain, second])
        valid = torch.isfinite(x).all()
        x = torch.where(valid, x, self._zero)
        self._blocks[:, 0] += x
        self._blocks[:, 1].lerp_(x, valid.float() * (1.0 - self.decay))

    def reset_window(self) -> None:
        self._blocks[:, 0].zero_()


def _block_fields(block: Sequence[float], names: Sequence[str], *, ranks: int, micro: int, b_small: int,
                  b_big: int, data_size: int | None) -> dict[str, Any]:
    """One block of the state (plain or preconditioned) -> its five fields ``names``
    (window small, window big, |G|^2, tr Sigma, noise scale)."""
    win_small, win_big, win_steps, ema_small, ema_big, ema_weight = block
    out: dict[str, Any] = dict.fromkeys(names)
    small, big, grad_sq, trace, ratio = names
    if win_steps > 0:  # win_steps = ranks x valid steps
        out[small] = win_small / (micro * win_steps)
        out[big] = win_big / win_steps
    if ema_weight > 0:  # bias correction: ema_weight = ranks x (1 - decay^n)
        out[grad_sq], out[trace] = estimates(ema_small / (micro * ema_weight), ema_big / ema_weight, b_small,
                                             b_big, data_size)
        out[ratio] = simple_noise_scale(out[grad_sq], out[trace])
    return out


def summarize(totals: Sequence[float], *, ranks: int, micro: int, b_small: int, b_big: int,
              data_size: int | None, preconditioned: bool = False) -> dict[str, Any]:
    """The metrics.jsonl fields from ``Accumulator.state`` summed over ``ranks`` ranks.

    ``micro``: micro-batches per rank per step (k; each rank's small_sum covers k of them).
    ``preconditioned``: the LARS fields are filled (else null).
    """
    totals = [float(v) for v in totals]
    sizes = dict(ranks=ranks, micro=micro, b_small=b_small, b_big=b_big, data_size=data_size)
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out.update(gns_steps=int(round(totals[2] / ranks)), gns_b_small=b_small, gns_b_big=b_big,
               gns_data_size=data_size)
    out.update(_block_fields(totals[:BLOCK], PLAIN_FIELDS, **sizes))
    if preconditioned:
        out.update(_block_fields(totals[BLOCK:], PRECOND_FIELDS, **sizes))
    return out


class GradientNoiseScale:
    """The estimator of one rank: hooks on the model's parameters plus an Accumulator.

        gns = GradientNoiseScale(model, batch_size=b, ranks=W, micro=k, data_size=N, device=dev,
                                 every=m, optimizer=opt)
        # per optimizer step (trainer.loop.train_step):
        gns.begin_step(scaler, step)    # before the first backward pass of the step
        ... k backward passes ...       # the hooks record each micro-batch's norms (measured steps)
        engine.optimizer_step(optimizer, scaler, reduced=gns.after_reduce)
        # on logging steps (trainer.run): gns.payload() rides in the metrics allreduce,
        fields = gns.fields(summed_payload)   # and resets the window

    ``every`` m: only steps whose number is a multiple of m are measured (the hooks and
    after_reduce return at once on the others); the EMA decays by EMA_DECAY**m per
    measured step, so its memory stays about 100 optimizer steps.  ``optimizer``: a Lars
    (``PRECONDITIONED``) adds the LARS noise scale, weighted by its trust ratios.
    Build it only when ``measurable(W, k)``.
    """

    def __init__(self, model: torch.nn.Module, *, batch_size: int, ranks: int, micro: int,
                 data_size: int | None, device: torch.device | str, decay: float = EMA_DECAY, every: int = 1,
                 optimizer: torch.optim.Optimizer | None = None):
        if not measurable(ranks, micro):
            raise ValueError("one rank with one micro-batch per step has a single batch size: nothing to measure")
        if every < 1:
            raise ValueError(f"every: expected an integer >= 1, got {every}")
        self.b_small, self.ranks, self.micro, self.every = batch_size, ranks, micro, every
        self.b_big = batch_size * ranks * micro
        self.data_size = data_size if data_size is not None and data_size >= self.b_big else None
        self.acc = Accumulator(device, decay ** every)
        self.preconditioned = isinstance(optimizer, PRECONDITIONED)
        params = [p for p in model.parameters() if p.requires_grad]
        # With a preconditioner the parameters are ordered by param group (a stable sort), so
        # that each group is one contiguous run: (run, group index), None for parameters the
        # optimizer does not have (it does not update them: weight 0).  The group's settings
        # are read at each step (load_state_dict replaces the group dicts).
        self._optimizer = optimizer
        self._runs: list[tuple[slice, int | None]] = []
        if self.preconditioned:
            count = len(optimizer.param_groups)
            index = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
            params.sort(key=lambda p: index.get(id(p), count))
            start = 0
            for i in range(count + 1):
                end = start + sum(1 for p in params if index.get(id(p), count) == i)
                if end > start:
                    self._runs.append((slice(start, end), i if i < count else None))
                start = end
        self.params = params
        self._norms: list[list[torch.Tensor]] = [[] for _ in params]  # per parameter: one norm per micro-batch
        self._zero = torch.zeros((), dtype=torch.float32, device=device)
        self._recording = False
        self._inv_scale: torch.Tensor | None = None
        self._handles = [p.register_hook(functools.partial(self._hook, i)) for i, p in enumerate(params)]

    def _hook(self, index: int, grad: torch.Tensor) -> None:
        if self._recording:
            self._norms[index].append(torch.linalg.vector_norm(grad, dtype=torch.float32))

    def measures(self, step: int | None) -> bool:
        """Whether optimizer step ``step`` (0-based; None: unnumbered, always) is measured."""
        return step is None or step % self.every == 0

    def begin_step(self, scaler: torch.amp.GradScaler | None = None, step: int | None = None) -> None:
        """Start recording if ``measures(step)``; remembers the loss scale of this step (a
        device tensor, no sync)."""
        self._recording = False
        if not self.measures(step):
            return
        self._inv_scale = None
        if scaler is not None and scaler.is_enabled():
            # scaler.scale(x) = x * scale: the scale as a device tensor, without .item().
            one = torch.ones((), dtype=torch.float32, device=self.acc.state.device)
            self._inv_scale = scaler.scale(one).reciprocal()
        self._recording = True

    def after_reduce(self) -> None:
        """Called once the reduced gradient is in p.grad, before unscaling, clipping or the step."""
        if not self._recording:  # a step that is not measured
            return
        self._recording = False
        grads = [p.grad for p in self.params]
        width = max((len(norms) for norms in self._norms), default=0)
        if width and any(g is not None for g in grads):
            # [parameters, micro-batches] norms (a parameter without a gradient in a micro-batch: 0)
            rows = [n + [self._zero] * (width - len(n)) for n in self._norms]
            small = torch.stack([x for row in rows for x in row]).view(len(rows), width).square().sum(1)
            # each micro-batch's loss was divided by k: its own mean gradient is k x what the hook saw
            small = small * self.micro ** 2
            present = iter(torch._foreach_norm([g for g in grads if g is not None]))
            big = torch.stack([self._zero if g is None else next(present).float() for g in grads]).to(small.device)
            if self._inv_scale is not None:
                small, big = small * self._inv_scale.square(), big * self._inv_scale
            big_sq = big.square()
            precond = None
            if self.preconditioned:
                weights = self._trust_sq(big)
                precond = ((weights * small).sum(), (weights * big_sq).sum())
            self.acc.add(small.sum(), big_sq.sum(), precond)
        for norms in self._norms:
            norms.clear()

    def _trust_sq(self, grad_norms: torch.Tensor) -> torch.Tensor:
        """Per parameter, the square of the trust ratio the optimizer's step applies with this
        reduced gradient (``grad_norms``, loss scale removed): LARS's preconditioner."""
        parts = []
        for run, group in self._runs:
            if group is None:
                parts.append(torch.zeros_like(grad_norms[run]))
            else:
                parts.append(group_trust_ratios(self._optimizer.param_groups[group],
                                                foreach_norms(self.params[run]).to(grad_norms), grad_norms[run]))
        return torch.cat(parts).square()

    def payload(self) -> torch.Tensor:
        """This rank's state (float32, like the metrics it rides with), to be summed over ranks."""
        return self.acc.state

    def fields(self, totals: Sequence[float] | torch.Tensor) -> dict[str, Any]:
        """metrics.jsonl fields from the rank-summed payload; starts a new logging window."""
        if isinstance(totals, torch.Tensor):
            totals = totals.tolist()
        out = summarize(totals, ranks=self.ranks, micro=self.micro, b_small=self.b_small, b_big=self.b_big,
                        data_size=self.data_size, preconditioned=self.preconditioned)
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

        Same shape (and EMA decay, i.e. the same ``every``): this rank takes its own row
        back, bit for bit.  Another shape: the window starts empty and the moving averages
        are carried over through their estimates: (|G|^2, tr Sigma) at the old batch sizes
        give E|G_s|^2 and E|G_b|^2 at the new ones, held by rank 0 (the averages are sums
        over ranks); the preconditioned block likewise.  Rows of BLOCK numbers (checkpoints
        from before the LARS noise scale) restore the plain block; the preconditioned one
        starts empty.
        """
        rows = saved["rows"].to(self.acc.state.device, torch.float32)
        if rows.shape[1] < STATE_SIZE:
            rows = torch.cat([rows, rows.new_zeros(rows.shape[0], STATE_SIZE - rows.shape[1])], 1)
        same = (saved["ranks"], saved["micro"], saved["b_small"]) == (self.ranks, self.micro, self.b_small)
        if same and rows.shape[0] == self.ranks and saved.get("decay") == self.acc.decay:
            self.acc.state.copy_(rows[rank])
            return "noise-scale averages restored"
        total = rows.sum(0).tolist()
        self.acc.state.zero_()
        if total[5] <= 0:
            return "noise-scale averages restarted (none saved yet)"
        for at in (0, BLOCK):
            ema_small, ema_big, weight = total[at + 3:at + 6]
            if weight <= 0:
                continue
            grad_sq, trace = estimates(ema_small / (saved["micro"] * weight), ema_big / weight, saved["b_small"],
                                       saved["b_big"], saved.get("data_size"))
            n = self.data_size
            raw_trace = trace * n / (n - 1) if n else trace  # undo the finite-data correction
            raw_grad = grad_sq - raw_trace / n if n else grad_sq
            new_weight = weight / saved["ranks"] * self.ranks  # ranks x (1 - decay^steps)
            if rank == 0:
                self.acc.state[at + 3] = (raw_grad + raw_trace / self.b_small) * self.micro * new_weight
                self.acc.state[at + 4] = (raw_grad + raw_trace / self.b_big) * new_weight
                self.acc.state[at + 5] = new_weight
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

    Returns {"steps", "grad_sq", "trace_sigma", "noise_scale", "precond_grad_sq",
    "precond_trace_sigma", "noise_scale_lars"} (the last three None unless every record has
    the LARS window means), or None without valid steps.  Pooling assumes the weights moved
    little over the records (as the EMA does over ~100 steps).
    """
    rows = [r for r in rows if r.get("gns_steps")]
    if not rows:
        return None
    sizes = {(r["gns_b_small"], r["gns_b_big"], r["gns_data_size"]) for r in rows}
    if len(sizes) > 1:
        raise ValueError(f"records of different batch or data sizes: {sorted(sizes, key=str)}")
    (b_small, b_big, data_size), = sizes
    steps = sum(r["gns_steps"] for r in rows)

    def pool(small_key: str, big_key: str) -> tuple[float | None, float | None, float | None]:
        if any(r.get(small_key) is None or r.get(big_key) is None for r in rows):
            return None, None, None
        small = sum(r[small_key] * r["gns_steps"] for r in rows) / steps
        big = sum(r[big_key] * r["gns_steps"] for r in rows) / steps
        grad_sq, trace = estimates(small, big, b_small, b_big, data_size)
        return grad_sq, trace, simple_noise_scale(grad_sq, trace)

    grad_sq, trace, ratio = pool("gns_small_sq", "gns_big_sq")
    p_grad_sq, p_trace, p_ratio = pool("gns_precond_small_sq", "gns_precond_big_sq")
    return {"steps": steps, "grad_sq": grad_sq, "trace_sigma": trace, "noise_scale": ratio,
            "precond_grad_sq": p_grad_sq, "precond_trace_sigma": p_trace, "noise_scale_lars": p_ratio}
