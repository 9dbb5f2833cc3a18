"""``larsctl doctor``: check this machine against what a job on a cluster profile needs."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--cluster", default="local", show_default=True,
              help="Profile name or path of a profile file.")
@click.option("--recipe", type=click.Path(path_type=Path),
              help="Also check that this recipe plans here and that its data directories look right.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON object (checks with status/name/found/fix, and the result).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              metavar="SECONDS", help="How long the probe of the job's Python may take (a large "
                                      "ImageFolder on a parallel file system takes longest).")
@click.pass_context
def doctor(ctx: click.Context, cluster: str, recipe: Path | None, as_json: bool, timeout: float) -> None:
    """Check that this machine has what a job on CLUSTER needs.

    One row per check (ok, warn or FAIL) with what was found and, when something
    is wrong, the fix: the job's Python and its torch, GPUs, torchvision, DALI and
    Horovod or torch.distributed (MPI/Gloo/NCCL as the launch line needs them), run
    in the job's own interpreter after the profile's modules and venv; what the
    launch line needs to start (mpirun, mpiexec, srun and its PMIx plugin,
    horovodrun or torchrun, the container runtime, ssh) and the MPI flavour; the
    scheduler's commands and whether the scheduler answers; the workdir.  With
    --recipe also the plan, the trainer options and the data directories.  Exit 0
    when nothing fails (warnings allowed), 1 when a check fails, 2 on bad input;
    Ctrl-C stops the probe at once (exit 130).

    \b
    Example:
      larsctl doctor
      larsctl doctor --cluster slurm-v100 --recipe jobs/resnet50-lars-32k.yaml
      larsctl doctor --cluster local --recipe jobs/demo.yaml --json
    """
    from larsctl.doctor import render, run_doctor

    try:
        report = run_doctor(cluster, recipe, timeout=timeout)
    except KeyboardInterrupt:  # run_doctor has killed the probes
        click.echo("larsctl doctor: interrupted; the probe was stopped", err=True)
        ctx.exit(130)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render(report))
    ctx.exit(report.exit_code)
