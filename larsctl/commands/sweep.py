"""``larsctl sweep``: steps-to-target across batch sizes, to check the noise scale's prediction."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click

from larsctl.commands.tracking import sweep_track_option
from larsctl.errors import UserError, warn
from larsctl.jobs.sweep_grid import DEFAULT_EVAL_SHARE, DEFAULT_LR_EXTEND


def _numbers(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            out = [kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list of numbers, got {value!r}") from None
        if not out or any(v <= 0 for v in out):
            raise click.BadParameter(f"expected positive numbers, got {value!r}")
        return out
    return parse


def _optimizers(ctx, param, value):
    from trainer.config import OPTIMIZER_NAMES as OPTIMIZERS

    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad or not names:
        raise click.BadParameter(f"expected some of {', '.join(OPTIMIZERS)}, got {value!r}")
    return names


@click.group(invoke_without_command=True)
@click.option("--cluster", "-c", help="Cluster profile name or file.")
@click.option("--recipe", "-r", type=click.Path(dir_okay=False, path_type=Path), help="Recipe file.")
@click.option("--batches", callback=_numbers(int), help="Effective batches, e.g. 16,32,64,128.")
@click.option("--optimizers", default="lars", show_default=True, callback=_optimizers,
              help="Optimizers to compare (lars, lamb, sgd).")
@click.option("--lrs", callback=_numbers(float), help="The same learning rates at every batch.")
@click.option("--lr-rule", help="Or an LR rule per batch: RULE or OPTIMIZER=RULE,... (legw, sqrt, linear).")
@click.option("--lr-factors", default="1", show_default=True, callback=_numbers(float),
              help="With --lr-rule: the grid of multiples of the rule's LR (e.g. 0.316,1,3.16).")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Seeds per point.")
@click.option("--target", help="What 'reached' means, e.g. 'val/accuracy>=0.9' (TAG OP VALUE).")
@click.option("--eval-examples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Evaluate every this many training examples, but never so often that evaluating costs "
                   "more than --eval-share of the point's training (the planner's estimate).")
@click.option("--eval-share", type=click.FloatRange(min=0, min_open=True, max=1), default=DEFAULT_EVAL_SHARE,
              show_default=True, help="The most evaluation may cost, as a share of a point's training time.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Give up on a point after this many steps.")
@click.option("--lr-extend", type=click.IntRange(min=0), default=DEFAULT_LR_EXTEND, show_default=True,
              help="How many grid steps `sweep resume` may add beyond each edge of a batch's LR grid "
                   "whose best LR sits at that edge.")
@click.option("--gpus", type=click.IntRange(min=1),
              help="Every point on this many GPUs (default: each batch over the most GPUs it fills; "
                   "a job array needs one shape).")
@click.option("--set", "trainer_sets", multiple=True, metavar="KEY=VALUE",
              help="A trainer option for every point (repeatable).")
@click.option("--max-concurrent", "--parallel", "max_concurrent", type=click.IntRange(min=1),
              help="Run at most this many points at once (Slurm: --array=0-N%P; PBS: max_run_subjobs; "
                   "default: what the profile holds).")
@click.option("--dry-run", is_flag=True, help="Print the points, the jobs, the estimated GPU-hours and wall "
                                                "time and (Slurm, PBS) the job array's script; submit nothing.")
@sweep_track_option
@click.pass_context
def sweep(ctx, cluster, recipe, batches, optimizers, lrs, lr_rule, lr_factors, seeds, target,
          eval_examples, eval_share, max_steps, lr_extend, gpus, trainer_sets, max_concurrent, dry_run, track):
    """Submit a grid of ordinary jobs (batches x optimizers x LRs x seeds) under one sweep id.

    The sweep is a file first (sweeps/<id>/sweep.json in the profile's workdir:
    grid, target, protocol, job ids), then jobs: on Slurm one job array
    (--array=0-N%P), on PBS one -J array job, on the local profile a queue
    with the same cap.  Each point is an ordinary job (status, logs, cancel,
    resume work on it) that evaluates every --eval-examples examples and, for
    a val/accuracy target, stops once it is reached.  `larsctl sweep report
    SWEEP` then measures steps-to-target per batch, fits S = S_min (1 +
    B_crit/B) and sets the fitted B_crit beside the jobs' noise-scale
    prediction; `larsctl sweep resume SWEEP` completes a submission that
    stopped half way and grows the LR grid of every batch whose best LR sits
    at an edge.

    \b
    Example:
      larsctl sweep --cluster local --recipe jobs/digits-sweep.yaml --batches 16,64,256 \\
          --optimizers lars,sgd --lr-rule lars=legw,sgd=linear --seeds 2 --target 'val/accuracy>=0.9'
      larsctl sweep resume sweep-digits-sweep-20261125-120000-ab12 --wait
      larsctl sweep report sweep-digits-sweep-20261125-120000-ab12 --out sweep.png
    """
    if ctx.invoked_subcommand is not None:
        return
    from larsctl.commands.options import parse_sets
    from larsctl.jobs import sweep_submit
    from larsctl.jobs.sweep_grid import SweepDefinition, parse_lr_rules

    missing = [f"--{name}" for name, value in (("cluster", cluster), ("recipe", recipe), ("batches", batches),
                                               ("target", target)) if not value]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (see `larsctl sweep --help`)")
    if (lrs is None) == (lr_rule is None):
        raise UserError("give either --lrs (the same LRs at every batch) or --lr-rule (a rule per batch)")
    definition = SweepDefinition(
        cluster=cluster, recipe=str(recipe.resolve()), target=target, batches=batches, optimizers=optimizers,
        lrs=lrs, lr_rules=parse_lr_rules(lr_rule, optimizers), lr_factors=lr_factors, seeds=seeds,
        eval_examples=eval_examples, max_steps=max_steps, trainer=parse_sets(trainer_sets), tracking=track,
        eval_share=eval_share, gpus=gpus, max_concurrent=max_concurrent, lr_extend=lr_extend)
    if dry_run:
        planned, array = sweep_submit.dry_run(definition)
        click.echo(_dry_run_text(definition, planned, array))
        return
    done = sweep_submit.submit(definition, warn=warn)
    click.echo(done.id)
    how = f" as job array {done.arrays[-1]['scheduler_id']}" if done.arrays else ""
    click.echo(f"{len(done.job_ids())} jobs submitted{how}; `larsctl status --sweep {done.id}` shows them",
               err=True)


def _dry_run_text(definition, planned, array) -> str:
    from larsctl.format import render_table
    from larsctl.jobs.sweeps import concurrency, estimate

    rows = [[p.point.label, str(p.spec.plan.gpus), str(p.spec.plan.per_gpu_batch),
             str(p.spec.plan.batches_per_allreduce), f"{p.spec.plan.base_lr:.4g}",
             str(p.spec.trainer["eval_every_steps"]), f"{p.spec.plan.estimate.gpu_hours:.3g}"]
            for p in planned]
    lanes = concurrency(definition, planned)
    gpu_hours, wall = estimate(planned, lanes)
    lines = [render_table(["POINT", "GPUS", "PER-GPU", "K", "LR", "EVAL EVERY", "GPU-H"], rows), "",
             f"{len(planned)} jobs, at most {lanes} at once: about {gpu_hours:.3g} GPU-hours and "
             f"{_duration(wall)} of wall time (the planner's estimate of each point to its step limit)"]
    if array is not None:
        lines += ["", f"# {array.script_path.name} (submitted with: {' '.join(array.submit_argv)})",
                  array.script.rstrip("\n")]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(1, minutes)} min"


@sweep.command("resume")
@click.argument("sweep_id", metavar="SWEEP")
@click.option("--wait", is_flag=True, help="Then wait for the sweep's jobs and grow again, until no LR grid "
                                           "is at an edge it may still grow past.")
@click.option("--poll", type=click.FloatRange(min=1), default=30, show_default=True, metavar="SECONDS",
              help="With --wait: how often to look at the jobs.")
def resume(sweep_id, wait, poll):
    """Complete a sweep and grow its LR grids where the optimum sits at an edge.

    Creates and submits the points a stopped submission left out (sweep.json
    says how far it got).  Then, for each optimizer and batch whose jobs have
    all ended and whose best LR is the smallest or largest of its grid, adds
    the points one grid step beyond that edge (the grid's own factor there),
    at most --lr-extend steps on each side.  Prints the sweep id and, on
    stderr, what it added.

    \b
    Example:
      larsctl sweep resume sweep-digits-sweep-20261125-120000-ab12
      larsctl sweep resume sweep-digits-sweep-20261125-120000-ab12 --wait --poll 60
    """
    from larsctl.jobs import sweep_submit

    while True:
        done, added = sweep_submit.resume(sweep_id, warn=warn)
        if added:
            click.echo(f"{sweep_id}: added {added} point{'s' * (added != 1)} beyond the edge of an LR grid", err=True)
        if not wait or (not added and not sweep_submit.running(sweep_id, warn=warn)):
            break
        while sweep_submit.running(sweep_id, warn=warn):
            time.sleep(poll)
    click.echo(done.id)


@sweep.command("report")
@click.argument("sweep_id", metavar="SWEEP")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the figure: steps vs batch with the fit, examples vs steps, best LR vs batch.")
@click.option("--size", default="1600x1000", show_default=True, metavar="WxH", help="Figure size in pixels.")
def report(sweep_id, as_json, out, size):
    """Steps-to-target per batch, the fit S = S_min (1 + B_crit/B), and the noise-scale prediction.

    \b
    Example:
      larsctl sweep report sweep-digits-sweep-20261125-120000-ab12 --out sweep.png
    """
    from larsctl.facts.jobdir import atomic_write
    from larsctl.jobs.registry import Registry
    from larsctl.jobs.sweep_report import measure

    match = re.fullmatch(r"(\d+)x(\d+)", size)
    if not match or not (200 <= int(match[1]) <= 10000 and 150 <= int(match[2]) <= 10000):
        raise UserError(f"--size {size!r}: expected WIDTHxHEIGHT in pixels, 200..10000 x 150..10000")
    if out is not None and out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: expected a file name ending in .png")
    measured = measure(Registry(), sweep_id, warn)
    result, unfinished = measured.report, measured.unfinished
    for job_id in unfinished:
        warn(f"{job_id} has not finished: counted as not reaching the target yet")
    if out is not None:
        from larsctl.results.scaling_figure import figure_png

        atomic_write(out, figure_png(result, int(match[1]), int(match[2])))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from larsctl.results.scaling_text import render

        click.echo(render(result))
        if out is not None:
            click.echo(f"wrote {out}")


@sweep.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_cmd(as_json):
    """The sweeps recorded, with their target and how many jobs each has.

    \b
    Example:
      larsctl sweep list
    """
    from larsctl.format import render_table
    from larsctl.jobs.registry import Registry

    registry = Registry()
    rows = [(sweep_id, definition, len(registry.all(sweep=sweep_id)))
            for sweep_id, _, definition in registry.sweeps()]
    if as_json:
        click.echo(json.dumps([{"id": i, "jobs": n, **d} for i, d, n in rows], indent=2))
        return
    click.echo(render_table(["SWEEP", "TARGET", "BATCHES", "OPTIMIZERS", "JOBS"],
                            [[i, d["target"], ",".join(map(str, d["batches"])), ",".join(d["optimizers"]), str(n)]
                             for i, d, n in rows]))
