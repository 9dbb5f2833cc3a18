"""The same run on another shape or another cluster: a job's spec re-planned for ``resume``.

What stays: the effective batch B, the model, precision, epochs, the learning rate, warmup and
epsilon (so the schedule is the same in steps: the trainer's steps per epoch are floor(N/B) on
any split of B), the trainer options, the fault settings and the job's name.  What the planner
chooses again, as it does for submit: GPUs, the per-GPU batch (the job's own when it still
divides B on the new GPU count and fits the GPU, else the largest that divides and fits) and
the batches per allreduce.  Pure: the measured throughput is passed in.
"""
from __future__ import annotations

from dataclasses import replace

from larsctl.config.profiles import ClusterProfile
from larsctl.facts.rules import OVERRIDABLE
from larsctl.planning.planner import (
    Cluster,
    Plan,
    PlanError,
    PlanRequest,
    make_plan,
    max_per_gpu_batch,
)
from larsctl.planning.spec import (
    JobSpec,
    _trainer_options,
    _val_images,
    _validate_trainer,
)

SHAPE_OF = "the job's plan"


def shape_text(plan: Plan) -> str:
    return (f"{plan.nodes} node(s) x {plan.gpus_per_node} GPU(s) x {plan.per_gpu_batch} x k="
            f"{plan.batches_per_allreduce} = {plan.effective_batch}")


def _per_gpu(spec: JobSpec, profile: ClusterProfile, gpus: int) -> int | None:
    """The per-GPU batch for ``gpus`` GPUs of ``profile`` keeping B, or None when none can."""
    plan, batch = spec.plan, spec.plan.effective_batch
    largest = max_per_gpu_batch(profile.gpu_type, plan.model, plan.precision)
    if batch % gpus:
        return None
    if plan.per_gpu_batch <= largest and batch % (plan.per_gpu_batch * gpus) == 0:
        return plan.per_gpu_batch
    share = batch // gpus
    return next((d for d in range(min(largest, share), 0, -1) if share % d == 0), None)


def _request(spec: JobSpec, profile: ClusterProfile, gpus: int | None, measured) -> PlanRequest:
    plan = spec.plan
    return spec_request(spec, target_batch=plan.effective_batch, gpus=gpus,
                        per_gpu_batch=_per_gpu(spec, profile, gpus) if gpus else None,
                        overrides={key: getattr(plan, key) for key in OVERRIDABLE},
                        override_from={key: SHAPE_OF for key in OVERRIDABLE},
                        train_images=plan.estimate.steps_per_epoch * plan.effective_batch, measured=measured)


def spec_request(spec: JobSpec, *, target_batch: int, per_gpu_batch: int | None, overrides: dict,
                 train_images: int, gpus: int | None = None, override_from: dict | None = None,
                 measured=None) -> PlanRequest:
    """A PlanRequest for ``spec``'s model, precision, epochs, LR rule and trainer options, at the
    batch and with the choices given (a job re-planned on another shape, cluster or batch)."""
    plan, trainer = spec.plan, spec.trainer
    return PlanRequest(
        target_batch=target_batch, model=plan.model, precision=plan.precision, epochs=plan.epochs,
        lr_rule=plan.lr_rule, gpus=gpus, per_gpu_batch=per_gpu_batch, overrides=overrides,
        override_from=override_from or {}, train_images=train_images,
        image_size=trainer.get("image_size", 224), fp16_allreduce=trainer.get("fp16_allreduce"),
        checkpoint_every_steps=trainer.get("checkpoint_every_steps"), val_images=_val_images(trainer),
        max_steps=trainer.get("max_steps"), eval_every_steps=trainer.get("eval_every_steps"), measured=measured)


def with_plan(spec: JobSpec, profile: ClusterProfile, plan: Plan, **changes) -> JobSpec:
    """``spec`` on ``profile`` with ``plan``: its trainer options derived again and validated."""
    requested = {k: v for k, v in spec.trainer.items() if k != "no_cuda"}
    options = _trainer_options(profile, plan, requested)
    _validate_trainer(options, require_data=False)
    return replace(spec, profile=profile, plan=plan, trainer=options, **changes)


def feasible_gpus(spec: JobSpec, profile: ClusterProfile, measured=None) -> list[int]:
    """Every GPU count of ``profile`` that can carry the job's effective batch."""
    out = []
    for gpus in range(1, profile.nodes * profile.gpus_per_node + 1):
        try:
            if _per_gpu(spec, profile, gpus) is not None:
                make_plan(Cluster.of(profile), _request(spec, profile, gpus, measured))
                out.append(gpus)
        except PlanError:
            continue
    return out


def nearest(counts: list[int], wanted: int) -> str:
    below = [c for c in counts if c < wanted]
    above = [c for c in counts if c > wanted]
    picks = ([below[-1]] if below else []) + ([above[0]] if above else [])
    return " or ".join(f"--gpus {c}" for c in picks) or "none"


def replan(spec: JobSpec, profile: ClusterProfile, gpus: int | None, measured=None) -> JobSpec:
    """``spec`` on ``gpus`` GPUs of ``profile`` (None: the job's own count where it can keep B, else
    the most that can); PlanError (one line, naming the nearest GPU counts that can) otherwise."""
    where = f"cluster {profile.name}"
    if gpus is None:  # the job's own count where it fits, else the most that keep B
        counts = feasible_gpus(spec, profile, measured)
        gpus = spec.plan.gpus if spec.plan.gpus in counts else (counts[-1] if counts else None)
    if gpus is None:
        raise PlanError(f"{where} cannot keep the job's effective batch {spec.plan.effective_batch} on any number "
                        f"of its GPUs ({profile.gpu_type}, {spec.plan.model} {spec.plan.precision})")
    if _per_gpu(spec, profile, gpus) is None:
        raise PlanError(f"{gpus} GPUs cannot keep the job's effective batch {spec.plan.effective_batch} on {where} "
                        f"(B must split into GPUs x per-GPU batch x batches per allreduce, the per-GPU batch at "
                        f"most {max_per_gpu_batch(profile.gpu_type, spec.plan.model, spec.plan.precision)}); "
                        f"suggestion: {nearest(feasible_gpus(spec, profile, measured), gpus)}")
    try:
        plan = make_plan(Cluster.of(profile), _request(spec, profile, gpus, measured))
    except PlanError as exc:
        counts = feasible_gpus(spec, profile, measured)
        hint = f"; GPU counts that can: {nearest(counts, gpus)}" if counts else ""
        raise PlanError(f"{where}: {exc.message}{hint}") from None
    return with_plan(spec, profile, plan)
