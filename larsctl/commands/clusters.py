"""``larsctl clusters list|show|validate``: the cluster profiles larsctl knows."""
from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from larsctl.config.profiles import (ProfileError, list_profiles, load_profile, read_profile,
                              shipped_dir, user_dir)


def _origin(profile) -> str:
    source = profile.source
    if source is None:
        return "-"
    return "user" if source.parent.resolve() == user_dir().resolve() else "shipped"


@click.group()
def clusters() -> None:
    """Cluster profiles: shipped ones in clusters/, yours in $LARSCTL_CONFIG_DIR/clusters.

    \b
    Example:
      larsctl clusters list
      larsctl clusters show slurm-v100
      larsctl clusters validate ~/.config/larsctl/clusters/mycluster.yaml
    """


@clusters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of profiles.")
def list_cmd(as_json: bool) -> None:
    """List every profile (user files override shipped ones of the same name).

    A file that does not load is a warning on stderr naming its file, line and field,
    and the profile it may define is left out (larsctl clusters validate checks it).

    \b
    Example:
      larsctl clusters list --json
    """
    profiles = list_profiles()
    if as_json:
        click.echo(json.dumps([dict(p.to_dict(), source=str(p.source)) for p in profiles],
                              indent=2))
        return
    rows = [("NAME", "SCHEDULER", "NODES", "GPUS/NODE", "GPU", "NET GBIT/S", "WALLTIME",
             "FROM")]
    rows += [(p.name, p.scheduler, str(p.nodes), str(p.gpus_per_node), p.gpu_type,
              f"{p.interconnect_gbps:g}", p.walltime, _origin(p)) for p in profiles]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@clusters.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def show(name: str, as_json: bool) -> None:
    """Print one profile (by name or file) with every default filled in.

    \b
    Example:
      larsctl clusters show local
    """
    profile = load_profile(name)
    if as_json:
        click.echo(json.dumps(dict(profile.to_dict(), source=str(profile.source)), indent=2))
        return
    click.echo(f"# {profile.source} ({_origin(profile)})")
    click.echo(yaml.safe_dump(profile.to_dict(), sort_keys=False).rstrip())


@clusters.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.pass_context
def validate(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Check profile files; without FILE, every shipped and user profile.

    Prints "ok: FILE (NAME)" per valid file; each invalid one gets one line on
    stderr naming the file, line and field, and the exit code is 2.

    \b
    Example:
      larsctl clusters validate clusters/slurm-v100.yaml
    """
    paths = list(files) or [p for d in (shipped_dir(), user_dir()) if d.is_dir()
                            for p in sorted(d.iterdir()) if p.suffix in (".yaml", ".yml")]
    failed = 0
    for path in paths:
        try:
            profile = read_profile(path)
        except ProfileError as exc:
            failed += 1
            click.echo(f"Error: {exc.message}", err=True)
            continue
        click.echo(f"ok: {path} ({profile.name})")
    if failed:
        ctx.exit(2)
