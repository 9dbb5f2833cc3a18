"""One training run on this rank: set up, resume, train, validate, checkpoint, stop.

Returns an exit code (trainer.exitcodes); bad input raises BadInput/DataError,
which __main__ turns into one line and exit 2.  Inside a larsctl job the rank also
reports its progress to its heartbeat and records how it ended (trainer.supervisor.rank).

The pieces, top to bottom: :class:`Run` builds the parts (:meth:`Run._build`), resumes
(:meth:`Run._resume`), then :meth:`Run._loop` runs epochs of steps; after each step
:meth:`Run._after_step` logs a window, agrees on a stop, checkpoints or validates.
Where the run is lives in one small :class:`Position`; what is fixed for the run in
:class:`Schedule`.
"""
from __future__ import annotations

import hashlib
import os
import random
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from trainer import exitcodes, outputs
from trainer.checkpoint import FORMAT_VERSION, CheckpointStore
from trainer.config import TrainConfig, data_kind, scaled_lr
from trainer.data.sampling import DIGEST_PARTS, batch_digest, digest_sums
from trainer.engines import Engine, create_engine
from trainer.errors import BadInput
from trainer.gns import STATE_SIZE, GradientNoiseScale, measurable
from trainer.loop import StepContext, evaluate, train_step
from trainer.metrics import MetricsLogger, Progress
from trainer.models import build_model
from trainer.ranklog import RankLog
from trainer.signals import CANCEL, STOP_CHECK_EVERY_STEPS, WIDTH, StopFlag, verdict
from trainer.supervisor.causes import Cause, FaultSettings
from trainer.supervisor.rank import RankSupervision, early_rank
from trainer.tracking.sender import start_tracker

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Paths:
    out_dir: Path
    tensorboard: Path
    checkpoint_pattern: str
    metrics: Path


def job_paths(cfg: TrainConfig) -> Paths:
    """Every output path from the config; no timestamps, so a restarted job finds its checkpoints."""
    out = Path(cfg.out_dir)
    pattern = cfg.checkpoint_format or str(out / outputs.CHECKPOINT_DIR / outputs.CHECKPOINT_NAME)
    tensorboard = Path(cfg.log_dir) if cfg.log_dir else out / outputs.TENSORBOARD_DIR
    return Paths(out, tensorboard, pattern, out / outputs.METRICS_FILE)


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the parameters' bytes (a check that data-parallel ranks did not drift apart)."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def reseed(seed: int, rank: int, step: int) -> None:
    """Every RNG a pure function of (seed, rank, step): a resumed step draws what the original drew."""
    s = np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0]
    torch.manual_seed(int(s))
    random.seed(int(s))
    np.random.seed(int(s) & 0xFFFFFFFF)


def step_once(ctx: StepContext, scheduler, micro_batches, seed: int, rank: int, global_step: int) -> torch.Tensor:
    """What the loop does per optimizer step (bench/bench_trainer.py times exactly this)."""
    reseed(seed, rank, global_step)
    stats = train_step(ctx, micro_batches, global_step)
    scheduler.step()
    return stats


def check_plan(plan: Mapping[str, Any], cfg: TrainConfig, world: int, source: str) -> None:
    """The job's planned effective batch must be what this launch produces."""
    planned = plan.get("effective_batch")
    actual = cfg.batch_size * world * cfg.batches_per_allreduce
    if planned is not None and planned != actual:
        raise BadInput(f"{source}: plan.effective_batch {planned} != batch_size {cfg.batch_size} x {world} "
                       f"workers x batches_per_allreduce {cfg.batches_per_allreduce} = {actual} "
                       "(launch the planned number of ranks)")


def configure_determinism(cfg: TrainConfig) -> None:
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def build_data(cfg: TrainConfig, engine: Engine, use_cuda: bool):
    from trainer.data import DataConfig, build_loaders

    kind = data_kind(cfg)
    dc = DataConfig(kind=kind, train_dir=cfg.train_dir, val_dir=cfg.val_dir, data_dir=cfg.data_dir,
                    dataset=cfg.dataset, image_size=cfg.image_size, batch_size=cfg.batch_size,
                    val_batch_size=cfg.val_batch_size, workers=cfg.workers, seed=cfg.seed,
                    num_classes=cfg.num_classes or 1000, synthetic_length=cfg.synthetic_length,
                    use_gpu=use_cuda, batches_per_allreduce=cfg.batches_per_allreduce)
    return build_loaders(dc, engine.rank, engine.world_size)


class Diverged(Exception):
    """The loss or the weights became non-finite at ``step``."""

    def __init__(self, step: int, what: str):
        super().__init__(f"{what} became non-finite at step {step}")
        self.step = step


@dataclass(frozen=True)
class Schedule:
    """What is fixed for the run."""

    steps_per_epoch: int
    total_steps: int
    effective_batch: int
    k: int


@dataclass
class Position:
    """Where the run is: the only state the loop moves (and the checkpoint keeps)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0

    def fraction(self, schedule: Schedule) -> float:
        return self.global_step / schedule.steps_per_epoch


class Run:
    """The state of one rank's run; `execute()` is the whole life of the process."""

    def __init__(self, cfg: TrainConfig, plan: Mapping[str, Any] | None = None, source: str = "--config",
                 stop_flag: StopFlag | None = None, faults: FaultSettings | None = None):
        self.cfg = cfg
        self.plan = plan or {}
        self.source = source
        self.stop_flag = stop_flag
        self.faults = faults or FaultSettings()
        self.rank_log: RankLog | None = None
        self.sup: RankSupervision | None = None

    def _note(self, text: str) -> None:
        """A line in this rank's own log file only (trainer/ranklog.py)."""
        if self.rank_log is not None:
            self.rank_log.note(text)

    def execute(self) -> int:
        cfg = self.cfg
        configure_determinism(cfg)
        use_cuda = torch.cuda.is_available() and not cfg.no_cuda
        # Installed before the slow set-up (python -m trainer installs it even before
        # torch loads): a signal during start-up stops the run at its first step.
        flag = self.stop_flag or StopFlag().install()
        # The heartbeat starts before the engine: a rendezvous with a dead node is a hang too.
        self.sup = RankSupervision(cfg.out_dir, early_rank(), self.faults)
        try:
            engine = create_engine(cfg.engine, use_cuda, self.faults.collective_timeout_s(), cfg.deterministic)
        except BaseException as exc:
            self.record_failure(exc)
            flag.uninstall()
            raise
        self.rank_log = RankLog(Path(cfg.out_dir) / outputs.RANK_LOG.format(rank=engine.rank))
        self._note(f"trainer: rank {engine.rank} of {engine.world_size} on {socket.gethostname()}, "
                   f"pid {os.getpid()}")
        try:
            return self._train(engine, flag, use_cuda)
        except BaseException as exc:
            self.record_failure(exc)
            raise
        finally:
            flag.uninstall()
            engine.shutdown()
            self.rank_log.close()

    def record_failure(self, exc: BaseException) -> None:
        """This rank's end record for an exception (bad input, out of memory, a crash)."""
        from trainer.data import DataError

        if self.sup is None or (isinstance(exc, SystemExit) and not exc.code):
            return
        if isinstance(exc, (BadInput, DataError)):
            self.sup.end(Cause.BAD_INPUT, f"bad input: {exc}")
        else:
            self.sup.end_with_exception(exc)

    # -- set-up --------------------------------------------------------------------------
    def _train(self, engine: Engine, flag: StopFlag, use_cuda: bool) -> int:
        if self.sup is None:  # called directly (tests): no supervision
            self.sup = RankSupervision(self.cfg.out_dir, engine.rank, self.faults)
        self.engine, self.flag = engine, flag
        self._build(use_cuda)
        try:
            resumed = self._resume()
            self.engine.broadcast_state(self.model, self.optimizer)
            self._start_logging(resumed)
            return self._run()
        finally:
            if self.gns is not None:
                self.gns.close()
            if hasattr(self, "progress"):
                self.progress.close()
            if hasattr(self, "log"):
                self.log.close()

    def _build(self, use_cuda: bool) -> None:
        """Data, model, optimizer, LR schedule and the step context (engine wrapped)."""
        cfg, engine, k = self.cfg, self.engine, self.cfg.batches_per_allreduce
        check_plan(self.plan, cfg, engine.world_size, self.source)
        self.loaders = build_data(cfg, engine, use_cuda)
        steps_per_epoch = self.loaders.steps_per_epoch(k) // k
        total_steps = cfg.epochs * steps_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        self.schedule = Schedule(steps_per_epoch, total_steps, cfg.batch_size * engine.world_size * k, k)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (then broadcast anyway)
        model = build_model(cfg.model, self.loaders.num_classes, cfg.norm).to(engine.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        from trainer.optim import PolynomialWarmup, create_optimizer

        self.lr = scaled_lr(cfg.base_lr, cfg.lr_scaling, engine.world_size, k)
        extra = {"mode": cfg.lars_mode, "eeta": cfg.eeta} if cfg.base_op == "lars" else {}
        try:  # the optimizer and schedule name any hyperparameter they reject
            optimizer = create_optimizer(cfg.base_op, model, lr=self.lr, momentum=cfg.momentum, weight_decay=cfg.wd,
                                         epsilon=cfg.epsilon, bn_bias_separately=cfg.bn_bias_separately, **extra)
            # Wrap first: Horovod builds a new optimizer object (with empty state),
            # so the schedule and the checkpoint must use the wrapped one.
            wrapped, optimizer = engine.wrap(model, optimizer, k, cfg.fp16_allreduce)
            scheduler = PolynomialWarmup(optimizer, decay_steps=cfg.epochs * steps_per_epoch,
                                         warmup_steps=cfg.warmup_epochs * steps_per_epoch, end_lr=cfg.end_lr,
                                         power=cfg.lr_power)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.scaler = torch.amp.GradScaler(engine.device.type) if cfg.amp == "fp16" else None
        self.gns = None
        if not cfg.no_noise_scale and measurable(engine.world_size, k):
            # The gradient noise scale: small = one micro-batch of one rank, big = the
            # reduced gradient; finite-data correction with the training samples (not for
            # synthetic data, one repeated batch per rank); with Lars also the LARS noise scale.
            self.gns = GradientNoiseScale(model, batch_size=cfg.batch_size, ranks=engine.world_size, micro=k,
                                          data_size=None if data_kind(cfg) == "synthetic"
                                          else self.loaders.train_samples, device=engine.device,
                                          every=cfg.noise_scale_every, optimizer=optimizer)
        self.ctx = StepContext(wrapped, optimizer, engine,
                               torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), engine.device,
                               self.scaler, AMP_DTYPES[cfg.amp], cfg.channels_last, self.gns)
        self.paths = job_paths(cfg)
        self.store = CheckpointStore(self.paths.checkpoint_pattern, cfg.keep_checkpoints, cfg.model)
        self.pos = Position()
        # Per-step non-finite flags of the current logging window (on the device: no sync).
        self.bad = torch.zeros(cfg.log_every_steps, device=engine.device)
        # The logged step's sample-index digest parts (host side; summed over ranks when logged).
        self.digest = [0.0] * DIGEST_PARTS

    def _resume(self) -> dict | None:
        """Rank 0 picks the newest checkpoint that verifies; every rank loads that same file.

        Returns what the resume event records (path, skipped checkpoints, notes), or None."""
        engine = self.engine
        index, skipped = -1, ()
        if engine.is_main:
            self.store.remove_temporaries()
            loaded = self.store.load_latest()
            if loaded is not None:
                index = self.store.candidates().index(loaded.path)
                skipped = loaded.skipped
        index = engine.broadcast_int(index)
        if index < 0:
            return None
        path = self.store.candidates()[index]
        state = self.store.verify_and_load(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        notes = []
        old = state["batch_size"] * state["world_size"] * state["batches_per_allreduce"]
        if old != self.schedule.effective_batch:
            notes.append(f"{path} was written with effective batch {old}, this run uses "
                         f"{self.schedule.effective_batch}; continuing from its step (not a bit-exact resume)")
            if engine.is_main:
                print(f"trainer: {notes[-1]}", file=sys.stderr, flush=True)
        if self.gns is not None and state.get("gns"):
            notes.append(self.gns.restore(state["gns"], engine.rank))
        self.pos = Position(state["epoch"], state["step_in_epoch"], state["global_step"])
        if self.pos.step_in_epoch >= self.schedule.steps_per_epoch:  # the effective batch changed since
            self.pos = Position(self.pos.epoch + 1, 0, self.pos.global_step)
        return {"path": str(path), "skipped": [list(s) for s in skipped], "notes": notes}

    def _start_logging(self, resumed: dict | None) -> None:
        engine, s, pos = self.engine, self.schedule, self.pos
        tracker = start_tracker(self.source, self.cfg.out_dir) if engine.is_main else None
        self.log = MetricsLogger(self.paths.metrics, self.paths.tensorboard, engine.is_main, tracker)
        self.progress = Progress(engine.is_main, s.total_steps, pos.global_step)
        if not self.cfg.no_noise_scale and self.gns is None:
            self.progress.message("gradient noise scale not measured: one rank with --batches-per-allreduce 1 "
                                  "has a single batch size")
        shape = {"ranks": engine.world_size, "batch_size": self.cfg.batch_size, "batches_per_allreduce": s.k,
                 "effective_batch": s.effective_batch}
        if resumed is None:
            self.log.event("start", pos.global_step, pos.fraction(s), shape=shape,
                           message=f"{engine.world_size} ranks x {self.cfg.batch_size} x k={s.k} = effective "
                                   f"batch {s.effective_batch}, lr {self.lr:g}, {s.total_steps} steps")
        else:
            self.log.event("resume", pos.global_step, pos.fraction(s), path=resumed["path"],
                           skipped=resumed["skipped"] or None, shape=shape,
                           message="; ".join(resumed["notes"]) or None)
            for path, why in resumed["skipped"]:
                self.progress.message(f"skipped checkpoint {path}: {why}")
            self.progress.message(f"resumed from {resumed['path']} at step {pos.global_step}")
        self.sup.progress("data", pos.global_step)

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> int:
        """Train to the end, a stop or a target; the exit code."""
        s, pos = self.schedule, self.pos
        if pos.global_step >= s.total_steps:
            # A preemption on the last step checkpoints it before the final validation: do that.
            self.progress.message(f"already at step {pos.global_step} of {s.total_steps}: validating the final "
                                  "weights")
            self._validate()
            return self._done()
        try:
            return self._loop()
        except Diverged as exc:
            return self._diverged(exc)

    def _loop(self) -> int:
        cfg, s, pos = self.cfg, self.schedule, self.pos
        self.window = torch.zeros(3, device=self.ctx.device)
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.first_step = pos.global_step + 1
        while pos.epoch < cfg.epochs:
            self.loaders.set_epoch(pos.epoch, start_batch=pos.step_in_epoch * s.k)
            batches = iter(self.loaders.train)
            while pos.step_in_epoch < s.steps_per_epoch and pos.global_step < s.total_steps:
                self.sup.progress("data")
                micro = [next(batches) for _ in range(s.k)]
                self.sup.progress("step")
                self._note_digest()
                stats = step_once(self.ctx, self.scheduler, micro, cfg.seed, self.engine.rank, pos.global_step)
                self.window += stats
                self.bad[self.window_steps] = (~torch.isfinite(stats[0])).float()
                pos.global_step, pos.step_in_epoch = pos.global_step + 1, pos.step_in_epoch + 1
                self.window_steps += 1
                self.sup.progress("data", pos.global_step)
                code = self._after_step()
                if code is not None:
                    return code
            if pos.global_step >= s.total_steps and pos.step_in_epoch < s.steps_per_epoch:
                break  # --max-steps inside an epoch
            del batches
            reached = self._validate()
            pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
            self._checkpoint()
            if pos.global_step >= s.total_steps or reached:
                return self._done()
        self._validate()
        self._checkpoint()
        return self._done()

    def _logs_at(self, step: int) -> bool:
        return step % self.cfg.log_every_steps == 0 or step == self.schedule.total_steps

    def _note_digest(self) -> None:
        """Before a step that will be logged: the digest parts of the samples this rank reads in it."""
        pos, k = self.pos, self.schedule.k
        if self.loaders.batch_indices is not None and self._logs_at(pos.global_step + 1):
            self.digest = digest_sums(pos.epoch, self.loaders.batch_indices(pos.epoch, pos.step_in_epoch * k, k))

    def _after_step(self) -> int | None:
        """Log a window, agree on a stop, checkpoint, validate; an exit code when the run ends."""
        cfg, s, pos = self.cfg, self.schedule, self.pos
        stop = None
        if self._logs_at(pos.global_step):
            stop = self._log_window()
        elif (pos.global_step == self.first_step or pos.global_step % STOP_CHECK_EVERY_STEPS == 0
              or pos.step_in_epoch == s.steps_per_epoch
              or (cfg.checkpoint_every_steps and pos.global_step % cfg.checkpoint_every_steps == 0)):
            stop = self.flag.agreed(self.engine)  # the same steps on every rank: all stop together
        if stop is not None:
            return self._stop(stop)
        mid_epoch = pos.step_in_epoch < s.steps_per_epoch and pos.global_step < s.total_steps
        every = cfg.checkpoint_every_steps
        if every and pos.global_step % every == 0 and mid_epoch:
            self._checkpoint()
        every = cfg.eval_every_steps
        if every and pos.global_step % every == 0 and mid_epoch and self._validate():
            self._checkpoint()
            return self._done()
        return None

    def _log_window(self) -> str | None:
        """The metrics allreduce of a logging step: the window's sums, the stop flags, the
        non-finite flags and the noise scale's sums ride in one tensor.  Returns the stop."""
        ctx, s, pos = self.ctx, self.schedule, self.pos
        digest = torch.tensor(self.digest, dtype=torch.float64, device=ctx.device)
        parts = [self.window, self.flag.local(ctx.device), self.bad, digest] + ([ctx.gns.payload()] if ctx.gns else [])
        # float64: the digest parts must add up exactly (the rest is small either way)
        totals = self.engine.allreduce_sum(torch.cat([p.double() for p in parts])).tolist()
        loss_sum, correct, n = totals[:3]
        at = 3
        stop = verdict(totals[at:at + WIDTH])
        at += WIDTH
        bad = totals[at:at + len(self.bad)]
        at += len(self.bad)
        sample_digest = batch_digest(totals[at:at + DIGEST_PARTS]) if self.loaders.batch_indices else None
        gns_fields = ctx.gns.fields(totals[at + DIGEST_PARTS:]) if ctx.gns else None
        elapsed = time.perf_counter() - self.window_start
        ips = self.window_steps * s.effective_batch / max(elapsed, 1e-9)
        lr = ctx.optimizer.param_groups[0]["lr"]
        self.log.train(epoch=pos.fraction(s), step=pos.global_step, total_steps=s.total_steps,
                       steps_per_epoch=s.steps_per_epoch, loss=loss_sum / n, accuracy=correct / n, lr=lr,
                       images_per_sec=ips, effective_batch=s.effective_batch, gns=gns_fields,
                       batch_digest=sample_digest)
        self._raise_if_diverged(bad)
        extra = {} if gns_fields is None or gns_fields["noise_scale"] is None \
            else {"noise_scale": gns_fields["noise_scale"]}
        self.progress.update(pos.global_step, epoch=round(pos.fraction(s), 3), loss=loss_sum / n,
                             accuracy=correct / n, lr=lr, images_per_sec=ips, **extra)
        self.window.zero_()
        self.window_start, self.window_steps = time.perf_counter(), 0
        return stop

    def _raise_if_diverged(self, bad: list[float]) -> None:
        """``bad``: the window's per-step count of ranks whose loss was not finite (summed over ranks)."""
        self.bad.zero_()
        first = next((i for i, count in enumerate(bad) if count > 0), None)
        if first is None:
            return
        step = self.pos.global_step - self.window_steps + 1 + first
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if self.scaler is not None and finite:  # fp16: an overflowed step the GradScaler skipped
            self.progress.message(f"non-finite loss at step {step} with finite weights: a skipped fp16 step")
            return
        raise Diverged(step, "the loss" if finite else "the loss and the weights")

    def _check_finite(self) -> None:
        """Before a checkpoint: were any steps since the last logging step non-finite (on any rank)?"""
        if self.window_steps:
            self._raise_if_diverged(self.engine.allreduce_sum(self.bad).tolist())

    # -- what the loop does besides steps ------------------------------------------------------
    def _checkpoint(self) -> None:
        """Rank 0 writes the run's state; nobody leaves (or is killed by its launcher) before the
        file exists.  Never the state of a diverged run."""
        engine, pos = self.engine, self.pos
        self.sup.progress("checkpoint")
        self._check_finite()
        gns = None
        if self.gns is not None:  # every rank's sums, each in its own row (a collective: not per step)
            rows = torch.zeros(engine.world_size, STATE_SIZE, device=self.ctx.device)
            rows[engine.rank] = self.gns.payload()
            gns = self.gns.saved(engine.allreduce_sum(rows.flatten()).reshape(engine.world_size, STATE_SIZE))
        if engine.is_main:
            state = {"format_version": FORMAT_VERSION, "model_name": self.cfg.model,
                     "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler is not None else {}, "epoch": pos.epoch,
                     "step_in_epoch": pos.step_in_epoch, "global_step": pos.global_step,
                     "world_size": engine.world_size, "batches_per_allreduce": self.schedule.k,
                     "batch_size": self.cfg.batch_size, "config": self.cfg.to_dict(),
                     "rng": "reseeded from (seed, rank, global_step) before every step"}
            if gns is not None:
                state["gns"] = gns
            path = self.store.save(state)
            self.log.event("checkpoint", pos.global_step, pos.fraction(self.schedule), path=str(path))
        engine.barrier()
        self.sup.progress("data")

    def _validate(self) -> bool:
        """Evaluate on every rank; whether the run's target (--stop-at-val-accuracy) is reached."""
        engine, pos, s = self.engine, self.pos, self.schedule
        self.sup.progress("validate")
        engine.broadcast_buffers(self.model)  # evaluate rank 0's BatchNorm statistics everywhere
        loss, top1, top5 = evaluate(self.ctx, self.model, self.loaders.val,
                                    on_batch=lambda: self.sup.progress("validate"))  # averaged over ranks
        self.log.val(epoch=pos.fraction(s), step=pos.global_step, loss=loss, accuracy=top1, top5=top5)
        self.progress.message(f"validation step={pos.global_step} loss={loss:.4f} accuracy={top1:.4f} "
                              f"top5={top5:.4f}")
        self.sup.progress("data")
        target = self.cfg.stop_at_val_accuracy
        if target is not None and top1 >= target:
            self.progress.message(f"validation top-1 {top1:.4f} reached {target:g} at step {pos.global_step}: done")
            return True
        return False

    # -- how the run ends ---------------------------------------------------------------------
    def _done(self) -> int:
        pos = self.pos
        self.log.event("done", pos.global_step, pos.fraction(self.schedule))
        # Every rank: ranks that trained together end with equal weights.
        self._note(f"trainer: rank {self.engine.rank} final parameters sha256 {parameter_digest(self.model)}")
        self.sup.end(Cause.COMPLETED, f"completed at step {pos.global_step}", step=pos.global_step)
        return exitcodes.OK

    def _stop(self, kind: str) -> int:
        """Every rank agreed on a stop at this step: checkpoint, record, exit."""
        engine, pos, s = self.engine, self.pos, self.schedule
        signum = self.flag.signum if self.flag.raised else "on another rank"
        self._note(f"trainer: rank {engine.rank} stops at step {pos.global_step} (stop signal)")
        self._checkpoint()
        if kind == CANCEL:
            self.log.event("cancelled", pos.global_step, pos.fraction(s), message=f"signal {signum}")
            self.sup.end(Cause.CANCELLED, f"cancelled at step {pos.global_step}; checkpoint written")
            line = f"cancelled at step {pos.global_step}"
            self.progress.message(line)  # rank 0's last line
            self._note(f"trainer: {line}")
            return exitcodes.CANCELLED
        self.log.event("preempted", pos.global_step, pos.fraction(s),
                       message=f"signal {signum}; exit {exitcodes.REQUEUE} to requeue")
        self.sup.end(Cause.PREEMPTED, f"stopped by a signal at step {pos.global_step}; checkpoint written")
        self.progress.message(f"stopped by a signal at step {pos.global_step}; checkpoint written, "
                              f"exit {exitcodes.REQUEUE}")
        return exitcodes.REQUEUE

    def _diverged(self, exc: Diverged) -> int:
        pos = self.pos
        line = f"{exc}: stopping without a checkpoint (the last good one stays)"
        self.log.event("diverged", exc.step, exc.step / self.schedule.steps_per_epoch, message=line)
        self.sup.end(Cause.DIVERGED, f"{exc} (detected at step {pos.global_step})", step=exc.step,
                     error=f"diverged at step {exc.step}")
        self.progress.message(line)
        self._note(f"trainer: rank {self.engine.rank}: {line}")
        return exitcodes.DIVERGED
