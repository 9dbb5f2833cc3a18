"""``larsctl submit`` and ``larsctl script``: turn a plan into a job directory and a running job."""
from __future__ import annotations

import click

from larsctl.commands.options import fault_overrides, job_options, resolve_spec
from larsctl.commands.tracking import track_option, with_tracking
from larsctl.errors import warn
from larsctl.jobs.lifecycle import DEFAULT_MAX_RESTARTS

_SEGMENT_OPTIONS = [
    click.option("--cluster", "-c", required=True, help="Cluster profile name or file."),
    click.option("--max-restarts", type=click.IntRange(min=0), default=DEFAULT_MAX_RESTARTS,
                 show_default=True, help="Requeues allowed after a preemption (exit code 75)."),
    click.option("--chain", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Segments chained with afterany dependencies; each resumes from the "
                      "last checkpoint (for runs longer than the walltime)."),
    click.option("--on-fault", "on_fault", multiple=True, metavar="CAUSE=ACTION",
                 help="What the job does after a segment ends with CAUSE: resume or stop (repeatable; "
                      "over the profile's faults: section), e.g. --on-fault hang=stop."),
    click.option("--fault-bound", type=click.IntRange(min=1), metavar="SECONDS",
                 help="A rank silent or without progress this long (or 10 median step times, if "
                      "longer) ends the segment as hang or node_fail (profile default 180)."),
    click.option("--crash-resumes", type=click.IntRange(min=0),
                 help="Resumes allowed after crash/oom segments (profile default 2); a crash loop "
                      "stops at once."),
]


def _segment_options(func):
    for option in reversed(_SEGMENT_OPTIONS):
        func = option(func)
    return job_options(func)


@click.command()
@_segment_options
@click.option("--dry-run", is_flag=True, help="Print the batch script(s) and launch line; write and submit nothing.")
@click.option("--follow", "-f", is_flag=True, help="Show a progress bar until the job ends; exit 0 if it completed.")
@track_option
def submit(cluster, max_restarts, chain, dry_run, follow, on_fault, fault_bound, crash_resumes, track, **job):
    """Plan a job, write its job directory and submit it; prints the job id.

    \b
    Examples:
      larsctl submit --cluster local --recipe jobs/demo.yaml --follow
      larsctl submit --cluster mycluster --target-batch 32768 --gpus 64 --dry-run
      larsctl submit --cluster mycluster --recipe jobs/demo.yaml --chain 3
      larsctl submit --cluster local --recipe jobs/demo.yaml --track mlflow:~/mlruns
    """
    from larsctl.jobs import lifecycle

    spec = resolve_spec(cluster, faults=fault_overrides(on_fault, fault_bound, crash_resumes), **job)
    spec = with_tracking(spec, track)
    if dry_run:
        unset = lifecycle.unset_variables(spec)
        if unset:
            warn(f"{', '.join(unset)} not set here: shown as written; a real submit refuses them")
        for i, request in enumerate(lifecycle.dry_run(spec, chain, max_restarts)):
            if i:  # the dependency is added to the submit command once the segment before has an id
                click.echo(f"# after: segment {i - 1} ends (afterany dependency on its scheduler id)")
            click.echo(str(request))
        return
    record = lifecycle.submit(spec, chain, max_restarts, warn=warn)
    click.echo(record.id)
    if follow:
        from larsctl.commands.status import follow_job

        raise SystemExit(follow_job(record.id))


@click.command()
@_segment_options
def script(cluster, max_restarts, chain, on_fault, fault_bound, crash_resumes, **job):
    """Write a job directory and its batch script(s) without submitting; prints the script path.

    The script runs on its own (sbatch / qsub / bash); register the job later
    with `larsctl jobs --rebuild DIR` to track it.

    \b
    Example:
      larsctl script --cluster mycluster --recipe jobs/demo.yaml
      sbatch "$(larsctl script --cluster mycluster --recipe jobs/demo.yaml)"
    """
    from larsctl.jobs import lifecycle

    spec = resolve_spec(cluster, faults=fault_overrides(on_fault, fault_bound, crash_resumes), **job)
    for path in lifecycle.write_scripts(spec, chain, max_restarts):
        click.echo(str(path))
