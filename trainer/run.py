"""One training run on this rank: set up, resume, train, validate, checkpoint, stop.

Returns an exit code (trainer.exitcodes); bad input raises BadInput/DataError,
which __main__ turns into one line and exit 2.
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
from trainer.engines import Engine, create_engine
from trainer.errors import BadInput
from trainer.gns import GradientNoiseScale, measurable
from trainer.loop import StepContext, evaluate, train_step
from trainer.metrics import MetricsLogger, Progress
from trainer.models import build_model
from trainer.ranklog import RankLog
from trainer.signals import STOP_CHECK_EVERY_STEPS, StopFlag

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
    stats = train_step(ctx, micro_batches)
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


class Run:
    """The state of one rank's run; `execute()` is the whole life of the process."""

    def __init__(self, cfg: TrainConfig, plan: Mapping[str, Any] | None = None, source: str = "--config",
                 stop_flag: StopFlag | None = None):
        self.cfg = cfg
        self.plan = plan or {}
        self.source = source
        self.stop_flag = stop_flag
        self.rank_log: RankLog | None = None

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
        engine = create_engine(cfg.engine, use_cuda)
        self.rank_log = RankLog(Path(cfg.out_dir) / outputs.RANK_LOG.format(rank=engine.rank))
        self._note(f"trainer: rank {engine.rank} of {engine.world_size} on {socket.gethostname()}, "
                   f"pid {os.getpid()}")
        try:
            return self._train(engine, flag, use_cuda)
        finally:
            flag.uninstall()
            engine.shutdown()
            self.rank_log.close()

    # -- set-up --------------------------------------------------------------------------
    def _train(self, engine: Engine, flag: StopFlag, use_cuda: bool) -> int:
        cfg, k, device = self.cfg, self.cfg.batches_per_allreduce, engine.device
        check_plan(self.plan, cfg, engine.world_size, self.source)
        loaders = build_data(cfg, engine, use_cuda)
        steps_per_epoch = loaders.steps_per_epoch(k) // k
        total_steps = cfg.epochs * steps_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        effective_batch = cfg.batch_size * engine.world_size * k

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (then broadcast anyway)
        model = build_model(cfg.model, loaders.num_classes, cfg.norm).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        from trainer.optim import PolynomialWarmup, create_optimizer

        lr = scaled_lr(cfg.base_lr, cfg.lr_scaling, engine.world_size, k)
        extra = {"mode": cfg.lars_mode, "eeta": cfg.eeta} if cfg.base_op == "lars" else {}
        try:  # the optimizer and schedule name any hyperparameter they reject
            optimizer = create_optimizer(cfg.base_op, model, lr=lr, momentum=cfg.momentum, weight_decay=cfg.wd,
                                         epsilon=cfg.epsilon, bn_bias_separately=cfg.bn_bias_separately, **extra)
            # Wrap first: Horovod builds a new optimizer object (with empty state),
            # so the schedule and the checkpoint must use the wrapped one.
            wrapped, optimizer = engine.wrap(model, optimizer, k, cfg.fp16_allreduce)
            scheduler = PolynomialWarmup(optimizer, decay_steps=cfg.epochs * steps_per_epoch,
                                         warmup_steps=cfg.warmup_epochs * steps_per_epoch, end_lr=cfg.end_lr,
                                         power=cfg.lr_power)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None

        paths = job_paths(cfg)
        store = CheckpointStore(paths.checkpoint_pattern, cfg.keep_checkpoints, cfg.model)
        epoch, step_in_epoch, global_step = 0, 0, 0
        resumed = self._resume(engine, store, model, optimizer, scheduler, scaler)
        if resumed is not None:
            epoch, step_in_epoch, global_step, path = resumed
            if step_in_epoch >= steps_per_epoch:  # the effective batch changed since the checkpoint
                epoch, step_in_epoch = epoch + 1, 0

        engine.broadcast_state(model, optimizer)
        gns = None
        if not cfg.no_noise_scale and measurable(engine.world_size, k):
            # The gradient noise scale: small = one micro-batch of one rank, big = the
            # reduced gradient; finite-data correction with the training samples (not for
            # synthetic data, one repeated batch per rank).
            gns = GradientNoiseScale(model, batch_size=cfg.batch_size, ranks=engine.world_size, micro=k,
                                     data_size=None if data_kind(cfg) == "synthetic" else loaders.train_samples,
                                     device=device)
        ctx = StepContext(wrapped, optimizer, engine,
                          torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), device, scaler,
                          AMP_DTYPES[cfg.amp], cfg.channels_last, gns)

        log = MetricsLogger(paths.metrics, paths.tensorboard, engine.is_main)
        progress = Progress(engine.is_main, total_steps, global_step)
        if not cfg.no_noise_scale and gns is None:
            progress.message("gradient noise scale not measured: one rank with --batches-per-allreduce 1 has "
                             "a single batch size")
        frac = global_step / steps_per_epoch
        if resumed is None:
            log.event("start", global_step, frac, message=f"{engine.world_size} ranks x {cfg.batch_size} x "
                      f"k={k} = effective batch {effective_batch}, lr {lr:g}, {total_steps} steps")
        else:
            log.event("resume", global_step, frac, path=str(resumed[3]))
            progress.message(f"resumed from {resumed[3]} at step {global_step}")

        def checkpoint(ep: int, sie: int, gs: int) -> None:
            if engine.is_main:
                state = {"format_version": FORMAT_VERSION, "model_name": cfg.model, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict() if scaler is not None else {}, "epoch": ep,
                         "step_in_epoch": sie, "global_step": gs, "world_size": engine.world_size,
                         "batches_per_allreduce": k, "batch_size": cfg.batch_size, "config": cfg.to_dict(),
                         "rng": "reseeded from (seed, rank, global_step) before every step"}
                path = store.save(state)
                log.event("checkpoint", gs, gs / steps_per_epoch, path=str(path))
            engine.barrier()  # nobody leaves (or is killed by its launcher) before the file exists

        def validate(gs: int) -> bool:
            """Evaluate on every rank; whether the run's target (--stop-at-val-accuracy) is reached."""
            engine.broadcast_buffers(model)  # evaluate rank 0's BatchNorm statistics everywhere
            loss, top1, top5 = evaluate(ctx, model, loaders.val)  # averaged over ranks: one verdict
            log.val(epoch=gs / steps_per_epoch, step=gs, loss=loss, accuracy=top1, top5=top5)
            progress.message(f"validation step={gs} loss={loss:.4f} accuracy={top1:.4f} top5={top5:.4f}")
            target = cfg.stop_at_val_accuracy
            if target is not None and top1 >= target:
                progress.message(f"validation top-1 {top1:.4f} reached {target:g} at step {gs}: done")
                return True
            return False

        try:
            if global_step >= total_steps:
                progress.message(f"already at step {global_step} of {total_steps}; nothing to do")
                log.event("done", global_step, global_step / steps_per_epoch)
                return exitcodes.OK
            code = self._loop(ctx, loaders, engine, flag, log, progress, scheduler, checkpoint, validate,
                              epoch, step_in_epoch, global_step, steps_per_epoch, total_steps, effective_batch)
            if code == exitcodes.OK:  # every rank: ranks that trained together end with equal weights
                self._note(f"trainer: rank {engine.rank} final parameters sha256 {parameter_digest(model)}")
            return code
        finally:
            if gns is not None:
                gns.close()
            progress.close()
            log.close()

    def _resume(self, engine, store, model, optimizer, scheduler, scaler):
        """Rank 0 picks the newest checkpoint that verifies; every rank loads that same file."""
        index = -1
        if engine.is_main:
            store.remove_temporaries()
            loaded = store.load_latest()
            if loaded is not None:
                index = store.candidates().index(loaded.path)
        index = engine.broadcast_int(index)
        if index < 0:
            return None
        path = store.candidates()[index]
        state = store.verify_and_load(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        old = state["batch_size"] * state["world_size"] * state["batches_per_allreduce"]
        new = self.cfg.batch_size * engine.world_size * self.cfg.batches_per_allreduce
        if old != new and engine.is_main:
            print(f"trainer: {path} was written with effective batch {old}, this run uses {new}; "
                  "continuing from its step (not a bit-exact resume)", file=sys.stderr, flush=True)
        return state["epoch"], state["step_in_epoch"], state["global_step"], path

    # -- the loop -------------------------------------------------------------------------
    def _loop(self, ctx, loaders, engine, flag, log, progress, scheduler, checkpoint, validate,
              epoch, step_in_epoch, global_step, steps_per_epoch, total_steps, effective_batch) -> int:
        cfg, k = self.cfg, self.cfg.batches_per_allreduce
        window = torch.zeros(3, device=ctx.device)
        window_start, window_steps = time.perf_counter(), 0
        first_step = global_step + 1
        while epoch < cfg.epochs:
            loaders.set_epoch(epoch, start_batch=step_in_epoch * k)
            batches = iter(loaders.train)
            while step_in_epoch < steps_per_epoch and global_step < total_steps:
                window += step_once(ctx, scheduler, [next(batches) for _ in range(k)], cfg.seed, engine.rank,
                                    global_step)
                global_step, step_in_epoch, window_steps = global_step + 1, step_in_epoch + 1, window_steps + 1
                stop = False
                if global_step % cfg.log_every_steps == 0 or global_step == total_steps:
                    # The stop flag and the noise scale's sums ride along in the metrics allreduce.
                    parts = [window, flag.local(ctx.device)] + ([ctx.gns.payload()] if ctx.gns else [])
                    totals = engine.allreduce_sum(torch.cat(parts)).tolist()
                    loss_sum, correct, n, stops = totals[:4]
                    stop = stops > 0
                    gns_fields = ctx.gns.fields(totals[4:]) if ctx.gns else None
                    elapsed = time.perf_counter() - window_start
                    ips = window_steps * effective_batch / max(elapsed, 1e-9)
                    lr = ctx.optimizer.param_groups[0]["lr"]
                    log.train(epoch=global_step / steps_per_epoch, step=global_step, total_steps=total_steps,
                              steps_per_epoch=steps_per_epoch, loss=loss_sum / n, accuracy=correct / n,
                              lr=lr, images_per_sec=ips, effective_batch=effective_batch, gns=gns_fields)
                    extra = {} if gns_fields is None or gns_fields["noise_scale"] is None \
                        else {"noise_scale": gns_fields["noise_scale"]}
                    progress.update(global_step, epoch=round(global_step / steps_per_epoch, 3),
                                    loss=loss_sum / n, accuracy=correct / n, lr=lr, images_per_sec=ips, **extra)
                    window.zero_()
                    window_start, window_steps = time.perf_counter(), 0
                elif (global_step == first_step or global_step % STOP_CHECK_EVERY_STEPS == 0
                      or step_in_epoch == steps_per_epoch
                      or (cfg.checkpoint_every_steps and global_step % cfg.checkpoint_every_steps == 0)):
                    stop = flag.agreed(engine)  # the same steps on every rank: all stop together
                if stop:
                    self._note(f"trainer: rank {engine.rank} stops at step {global_step} (stop signal)")
                    checkpoint(epoch, step_in_epoch, global_step)
                    log.event("preempted", global_step, global_step / steps_per_epoch,
                              message=f"signal {flag.signum if flag.raised else 'on another rank'}; "
                                      f"exit {exitcodes.REQUEUE} to requeue")
                    progress.message(f"stopped by a signal at step {global_step}; checkpoint written, "
                                     f"exit {exitcodes.REQUEUE}")
                    return exitcodes.REQUEUE
                mid_epoch = step_in_epoch < steps_per_epoch and global_step < total_steps
                every = cfg.checkpoint_every_steps
                if every and global_step % every == 0 and mid_epoch:
                    checkpoint(epoch, step_in_epoch, global_step)
                every = cfg.eval_every_steps
                if every and global_step % every == 0 and mid_epoch and validate(global_step):
                    checkpoint(epoch, step_in_epoch, global_step)
                    log.event("done", global_step, global_step / steps_per_epoch)
                    return exitcodes.OK
            if global_step >= total_steps and step_in_epoch < steps_per_epoch:
                break  # --max-steps inside an epoch
            del batches
            reached = validate(global_step)
            epoch, step_in_epoch = epoch + 1, 0
            checkpoint(epoch, step_in_epoch, global_step)
            if global_step >= total_steps or reached:
                log.event("done", global_step, global_step / steps_per_epoch)
                return exitcodes.OK
        validate(global_step)
        checkpoint(epoch, step_in_epoch, global_step)
        log.event("done", global_step, global_step / steps_per_epoch)
        return exitcodes.OK
