"""``larsctl cancel`` and ``larsctl resume``.

Cancel is safe to repeat (TorchX): a finished job is left alone.  Resume
submits the job again into the same job directory; the trainer continues from
its newest valid checkpoint there, so nothing already trained is lost.
"""
from __future__ import annotations

import click

from larsctl.errors import warn
from larsctl.jobs.lifecycle import DEFAULT_MAX_RESTARTS


@click.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
def cancel(job_ids):
    """Cancel jobs (every chain segment); cancelling a finished job does nothing.

    \b
    Example:
      larsctl cancel demo-20250101-120000-ab12
    """
    from larsctl.jobs import lifecycle
    from larsctl.jobs.registry import Registry

    registry = Registry()
    for job_id in job_ids:
        registry.get(job_id)  # every id known before anything is cancelled
    for job_id in job_ids:
        record, ended = lifecycle.cancel(registry, job_id)
        click.echo(f"{record.id}: {'already ' if ended else ''}{record.state.value}")


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--max-restarts", type=click.IntRange(min=0), default=DEFAULT_MAX_RESTARTS, show_default=True,
              help="Requeues allowed after a preemption (exit code 75).")
@click.option("--chain", type=click.IntRange(min=1), default=1, show_default=True,
              help="Segments to submit, chained with afterany dependencies.")
@click.option("--gpus", type=click.IntRange(min=1),
              help="Continue on this many GPUs: re-planned keeping the effective batch, the LR schedule, "
                   "the data order and the step count.")
@click.option("--cluster", "-c", help="Continue on another cluster profile (the job directory must be on a "
                                      "file system its workdir is on).")
@click.option("--force", is_flag=True, help="Cancel the job first if it still runs.")
@click.option("--dry-run", is_flag=True, help="Show the old and new split, the new estimate and the script; "
                                              "change nothing.")
def resume(job_id, max_restarts, chain, gpus, cluster, force, dry_run):
    """Submit a stopped job again into its job directory; training continues from its newest
    checkpoint, on the same shape or (--gpus, --cluster) another.

    \b
    Examples:
      larsctl cancel demo-20250101-120000-ab12
      larsctl resume demo-20250101-120000-ab12 --chain 2
      larsctl resume demo-20250101-120000-ab12 --gpus 1 --dry-run
      larsctl resume demo-20250101-120000-ab12 --cluster mycluster --gpus 64
    """
    from larsctl.jobs import lifecycle
    from larsctl.jobs.registry import Registry
    from larsctl.jobs.reshape import comparison

    result = lifecycle.resume(Registry(), job_id, chain, max_restarts, warn, gpus=gpus, cluster=cluster,
                              force=force, dry_run=dry_run)
    if dry_run:
        old, new, requests = result
        click.echo(comparison(old, new))
        for request in requests:
            click.echo(str(request))
        return
    click.echo(result.id)
