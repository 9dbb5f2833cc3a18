"""The records of a doctor run: one :class:`Check` per row, the :class:`Report`, its table.

A row has a status (``ok``, ``warn`` or ``FAIL``), a name, what was found and, on
warn and FAIL rows, the fix.  A report's exit code is 1 when a row failed, else 0.
The few wording helpers every check module uses live here too: where a profile
came from and how to change one of its settings.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    """One row: ``status`` is ok, warn or FAIL; ``fix`` is set on warn and FAIL rows."""

    status: str
    name: str
    found: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"status": self.status, "name": self.name, "found": self.found, "fix": self.fix}


def ok(name: str, found: str) -> Check:
    return Check(OK, name, found)


def warn(name: str, found: str, fix: str) -> Check:
    return Check(WARN, name, found, fix)


def fail(name: str, found: str, fix: str) -> Check:
    return Check(FAIL, name, found, fix)


@dataclass(frozen=True)
class Report:
    cluster: str
    profile_file: str | None
    recipe: str | None
    checks: tuple[Check, ...]
    seconds: float = 0.0

    @property
    def result(self) -> str:
        statuses = {c.status for c in self.checks}
        return FAIL if FAIL in statuses else WARN if WARN in statuses else OK

    @property
    def exit_code(self) -> int:
        return 1 if self.result == FAIL else 0

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "profile_file": self.profile_file, "recipe": self.recipe,
                "result": self.result, "exit_code": self.exit_code,
                "counts": {s: self.count(s) for s in (OK, WARN, FAIL)},
                "seconds": round(self.seconds, 2),
                "checks": [c.to_dict() for c in self.checks]}


_STYLE = {OK: {"fg": "green"}, WARN: {"fg": "yellow"}, FAIL: {"fg": "red", "bold": True}}


def render(report: Report) -> str:
    """The table: status, name, what was found; the fix below a warn/FAIL row.

    Statuses carry ``click.style`` colours; ``click.echo`` drops them when the
    output is not a terminal.
    """
    import click

    width = max((len(c.name) for c in report.checks), default=0)
    lines = [f"larsctl doctor: cluster {report.cluster}"
             + (f" ({report.profile_file})" if report.profile_file else "")
             + (f", recipe {report.recipe}" if report.recipe else "")]
    for c in report.checks:
        status = click.style(c.status.ljust(4), **_STYLE[c.status])
        lines.append(f"{status}  {c.name.ljust(width)}  {c.found}")
        if c.fix:
            lines.append(f"{'':4}  {'':{width}}  fix: {c.fix}")
    parts = [f"{report.count(FAIL)} failed"] if report.count(FAIL) else []
    if report.count(WARN):
        parts.append(f"{report.count(WARN)} warning{'s' if report.count(WARN) != 1 else ''}")
    parts.append(f"{report.count(OK)} ok")
    result = click.style(report.result, **_STYLE[report.result])
    lines.append(f"Result: {result} ({', '.join(parts)}; {report.seconds:.1f} s)")
    return "\n".join(lines)


# --- wording shared by the checks ------------------------------------------------------

def profile_file(profile) -> str:
    return str(profile.source) if profile.source else f"the {profile.name} profile"


def _shipped(profile) -> bool:
    from larsctl.config.profiles import shipped_dir

    return profile.source is not None and Path(profile.source).resolve().parent == shipped_dir()


def in_profile(profile, change: str) -> str:
    """The fix ``change``, a sentence with ``{file}`` where the profile file goes, for this profile.

    Shipped profiles are examples that an update of larsctl overwrites: the change goes in
    a profile of the user's own, in the user profile directory, copied from the shipped one
    under a new name.
    """
    if not _shipped(profile):
        return change.replace("{file}", profile_file(profile))
    from larsctl.config.profiles import user_dir

    name = f"my-{profile.name}"
    copy = user_dir() / f"{name}.yaml"
    return (change.replace("{file}", str(copy)) + f" (a profile of your own; the shipped one is an example: "
            f"cp {profile.source} {copy}, set name: {name} in it, then use --cluster {name})")


def first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- what the scheduler classes' own rows share (their doctor_checks) -----------------------
def check_commands(kind: str, commands: tuple[str, ...]) -> Check:
    """One row: every command in ``commands`` is on PATH (named ``<kind> commands``)."""
    found = {c: shutil.which(c) for c in commands}
    missing = [c for c, p in found.items() if not p]
    if missing:
        have = [c for c, p in found.items() if p]
        return fail(f"{kind} commands", f"not on PATH: {', '.join(missing)}"
                                        + (f" (found {', '.join(have)})" if have else ""),
                    f"run larsctl on the cluster's login node, or `module load {kind}` first")
    dirs = sorted({str(Path(p).parent) for p in found.values()})
    return ok(f"{kind} commands", f"{', '.join(commands)} in {', '.join(dirs)}")


def ask(scheduler, argv: list[str]) -> tuple[bool, str]:
    """(whether ``argv`` answered with exit 0, its output or why it did not answer)."""
    from larsctl.schedulers.base import SchedulerError

    try:
        r = scheduler.run(argv)
    except SchedulerError as exc:  # not on PATH, or no answer within the scheduler's timeout
        return False, str(exc)
    text = r.stdout + ("\n" if r.stdout and r.stderr else "") + r.stderr
    if r.returncode != 0:
        return False, text if text.strip() else f"exit {r.returncode}"
    return True, text
