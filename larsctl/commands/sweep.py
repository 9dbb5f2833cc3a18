"""``larsctl sweep``: steps-to-target across batch sizes, to check the noise scale's prediction."""
from __future__ import annotations

import json
import re
from pathlib import Path

import click

from larsctl.commands.tracking import sweep_track_option
from larsctl.errors import UserError, warn


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
              help="Evaluate every this many training examples (the same resolution at every batch).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Give up on a point after this many steps.")
@click.option("--set", "trainer_sets", multiple=True, metavar="KEY=VALUE",
              help="A trainer option for every point (repeatable).")
@click.option("--parallel", type=click.IntRange(min=1),
              help="Run at most this many points at once (default: all on a scheduler with a queue; "
                   "what the machine holds on the local profile).")
@click.option("--dry-run", is_flag=True, help="List the points and their plans; submit nothing.")
@sweep_track_option
@click.pass_context
def sweep(ctx, cluster, recipe, batches, optimizers, lrs, lr_rule, lr_factors, seeds, target,
          eval_examples, max_steps, trainer_sets, parallel, dry_run, track):
    """Submit a grid of ordinary jobs (batches x optimizers x LRs x seeds) under one sweep id.

    Each point is an ordinary job (status, logs, cancel, resume work on it) that
    evaluates every --eval-examples examples and, for a val/accuracy target,
    stops once it is reached.  `larsctl sweep report SWEEP` then measures
    steps-to-target per batch, fits S = S_min (1 + B_crit/B) and sets the
    fitted B_crit beside the jobs' gradient-noise-scale prediction.

    \b
    Example:
      larsctl sweep --cluster local --recipe jobs/digits-sweep.yaml --batches 16,64,256 \\
          --optimizers lars,sgd --lr-rule lars=legw,sgd=linear --seeds 2 --target 'val/accuracy>=0.9'
      larsctl sweep report sweep-digits-sweep-20261125-120000-ab12 --out sweep.png
      larsctl sweep --cluster local --recipe jobs/digits-sweep.yaml --batches 16,64 --lrs 0.5 \
          --target 'val/accuracy>=0.9' --track mlflow:~/mlruns
    """
    if ctx.invoked_subcommand is not None:
        return
    from larsctl.commands.options import parse_sets
    from larsctl.jobs import sweeps

    missing = [f"--{name}" for name, value in (("cluster", cluster), ("recipe", recipe), ("batches", batches),
                                               ("target", target)) if not value]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (see `larsctl sweep --help`)")
    if (lrs is None) == (lr_rule is None):
        raise UserError("give either --lrs (the same LRs at every batch) or --lr-rule (a rule per batch)")
    definition = sweeps.SweepDefinition(
        cluster=cluster, recipe=str(recipe.resolve()), target=target, batches=batches, optimizers=optimizers,
        lrs=lrs, lr_rules=sweeps.parse_lr_rules(lr_rule, optimizers), lr_factors=lr_factors, seeds=seeds,
        eval_examples=eval_examples, max_steps=max_steps, trainer=parse_sets(trainer_sets), tracking=track)
    if dry_run:
        for point, spec in sweeps.plan_sweep(definition, "sweep"):
            plan = spec.plan
            click.echo(f"{point.label}: {plan.gpus} x {plan.per_gpu_batch} x {plan.batches_per_allreduce}, "
                       f"lr {plan.base_lr:.4g}, eval every {spec.trainer['eval_every_steps']} steps")
        return
    sweep_id, records = sweeps.submit(definition, warn=warn, parallel=parallel)
    click.echo(sweep_id)
    click.echo(f"{len(records)} jobs submitted; `larsctl jobs --sweep {sweep_id}` lists them", err=True)


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
    from larsctl.jobs import sweeps

    match = re.fullmatch(r"(\d+)x(\d+)", size)
    if not match or not (200 <= int(match[1]) <= 10000 and 150 <= int(match[2]) <= 10000):
        raise UserError(f"--size {size!r}: expected WIDTHxHEIGHT in pixels, 200..10000 x 150..10000")
    if out is not None and out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: expected a file name ending in .png")
    result, unfinished = sweeps.report(sweep_id)
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
