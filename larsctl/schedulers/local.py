"""The local scheduler: runs a job's batch script on this machine, detached.

Same flow as the Slurm backend (submitit's LocalExecutor idea): ``dryrun``
renders a bash script of the same shape (environment, venv, the launch line,
requeue on exit code 75), ``schedule`` starts it in its own session with its
output in ``logs/``, and the job directory is the only state: the pid file,
the restart counter and a status file the script writes when it ends.

A local scheduler id is ``<job_dir>#<segment>``: the job directory holds
everything ``describe`` and ``cancel`` need, so a record rebuilt from the job
directory keeps working.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from larsctl.facts.jobdir import RESTARTS, JobPaths, atomic_write
from larsctl.facts.states import JobState
from larsctl.schedulers.base import BatchRequest, JobInfo, Scheduler, SchedulerError
from larsctl.schedulers.batch import (
    FILE_DIRECTIVE,
    body,
    directive_value,
    restart_record,
)
from larsctl.schedulers.launch import LaunchError, build_launch

CANCEL_GRACE_S = 30.0  # time for the trainer to write its checkpoint after TERM


def make_id(job_dir: Path, segment: int) -> str:
    return f"{Path(job_dir).resolve()}#{segment}"


def parse_id(scheduler_id: str) -> tuple[JobPaths, int]:
    root, sep, segment = scheduler_id.rpartition("#")
    if not sep or not segment.isdigit():
        raise SchedulerError(f"not a local job id: {scheduler_id!r} (expected <job_dir>#<segment>)")
    return JobPaths(Path(root)), int(segment)


def proc_starttime(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (None if gone or a zombie).

    Comparing it with the recorded value makes the liveness check safe against
    pid reuse.
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return None
    return fields[19]  # field 22 overall


def _alive(pid: int, start: str) -> bool:
    return proc_starttime(pid) == start


def _descendants(pid: int) -> set[int]:
    """All processes below ``pid`` (launchers such as horovodrun start ranks in new sessions)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def render_script(spec, paths: JobPaths, launch, *, job_id: str, segment: int,
                  max_restarts: int, extra_setup: list[str]) -> str:
    """The bash script of one segment (pure; every value is shell-quoted).

    The shared Slurm/PBS body (batch.body) runs the launcher and decides on
    requeue; "requeue" here is re-executing this script in place, which keeps
    the pid (and so the job's identity) and counts one more line in
    ``<job_dir>/restarts``.
    """
    q = shlex.quote
    script = paths.script("local", segment)
    header = [
        "#!/usr/bin/env bash",
        FILE_DIRECTIVE,
        f"# larsctl local job {directive_value(job_id, 'job id')}, segment {segment}; "
        f"runs on its own: bash {q(str(script))}",
        f"larsctl_status={q(str(paths.segment_status(segment)))}",
        f"larsctl_cancel={q(str(paths.cancel_marker(segment)))}",
        f"larsctl_started={q(str(paths.segment_started(segment)))}",
        *extra_setup,
    ]
    requeue = [restart_record("local-$$", f" segment={segment}"),
               f'exec bash {q(str(script))}']
    return body(spec, paths.root, launch, header=header, requeue=requeue,
                max_restarts=max_restarts,
                restarts_expr=f"\"$(grep -c ' segment={segment}$' {RESTARTS})\"",
                scheduler_id_expr=q(make_id(paths.root, segment)), scheduler="local", segment=segment,
                before_launch=[_BEFORE_LAUNCH.strip("\n")])


# Local-only lines before the launch: the status file written on exit, and the
# wait for the segment before this one (chain segments and resumes).
_BEFORE_LAUNCH = r"""
# shellcheck disable=SC2317  # called on exit
larsctl_finish() {  # the final state, written atomically
  local rc=$? state=FAILED
  if [ -e "$larsctl_cancel" ]; then state=CANCELLED; elif [ "$rc" -eq 0 ]; then state=COMPLETED; fi
  printf '%s %s\n' "$state" "$rc" > "$larsctl_status.tmp" && mv -f "$larsctl_status.tmp" "$larsctl_status"
}
trap larsctl_finish EXIT
touch restarts  # the requeue test counts its lines
# The wait below runs once a second in every queued job (a sweep queues hundreds), so it
# starts no process: the stat line is read by the shell, and the pause is a read with a
# timeout on a pipe nobody writes to (opened read-write, so it never ends early).
larsctl_alive() {  # PID STARTTIME: that very process still runs (safe against pid reuse)
  local stat fields
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
  read -r -a fields <<< "${stat##*) }"
  [ "${fields[0]}" != Z ] && [ "${fields[19]}" = "$2" ]
}
if [ -n "${LARSCTL_AFTER_PID:-}" ]; then
  exec {larsctl_tick}<> <(:)
  while [ ! -e "$larsctl_cancel" ] && larsctl_alive "$LARSCTL_AFTER_PID" "${LARSCTL_AFTER_START:-}"; do
    read -r -t 1 -u "$larsctl_tick" || true
  done
  exec {larsctl_tick}>&-
  if [ ! -e "$larsctl_cancel" ] && [ "${LARSCTL_AFTER_KIND:-afterany}" = afterok ] &&
     ! grep -qs '^COMPLETED' "${LARSCTL_AFTER_STATUS:-}"; then
    echo "larsctl: the segment before this one did not complete; not starting" >&2
    touch "$larsctl_cancel"
    exit 1
  fi
fi
if [ -e "$larsctl_cancel" ]; then exit 143; fi
touch "$larsctl_started"
"""


class LocalScheduler(Scheduler):
    """Jobs as detached process groups on this machine."""

    name = "local"

    def __init__(self, cancel_grace_s: float = CANCEL_GRACE_S):
        self.cancel_grace_s = cancel_grace_s

    def dryrun(self, spec, job_dir: Path, *, job_id: str, segment: int = 0,
               segments: int = 1, max_restarts: int = 0) -> BatchRequest:
        paths = JobPaths(Path(job_dir))
        profile = spec.profile
        try:
            launch = build_launch(profile, spec.plan, paths.root, scheduler="local", job_id=job_id)
        except LaunchError as exc:
            raise SchedulerError(str(exc)) from None
        extra = []
        if not profile.venv:
            # No venv in the profile: use the environment larsctl itself runs in
            # (python, horovodrun and torchrun next to this interpreter).
            extra.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
        script = render_script(spec, paths, launch, job_id=job_id, segment=segment,
                               max_restarts=max_restarts, extra_setup=extra)
        return BatchRequest(script=script, script_path=paths.script("local", segment),
                            submit_argv=["bash"], launch_line=launch.line, segment=segment)

    def schedule(self, request: BatchRequest, *, after: str | None = None,
                 after_kind: str = "afterany") -> str:
        paths = JobPaths(request.script_path.parent)
        self.write(request)
        env = dict(os.environ, **request.env)
        if after:
            prev_paths, prev_segment = parse_id(after)
            pid, start = self._pid(prev_paths, prev_segment)
            env.update(LARSCTL_AFTER_PID=str(pid), LARSCTL_AFTER_START=start,
                       LARSCTL_AFTER_KIND=after_kind,
                       LARSCTL_AFTER_STATUS=str(prev_paths.segment_status(prev_segment)))
        log = paths.segment_log(request.segment)
        try:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    ["bash", str(request.script_path)], stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, cwd=paths.root, env=env, start_new_session=True)
        except OSError as exc:
            raise SchedulerError(f"cannot start {request.script_path}: {exc.strerror or exc}") from None
        start = proc_starttime(proc.pid) or ""
        atomic_write(paths.segment_pid(request.segment), f"{proc.pid} {start}\n")
        return make_id(paths.root, request.segment)

    @staticmethod
    def _pid(paths: JobPaths, segment: int) -> tuple[int, str]:
        try:
            pid, start = paths.segment_pid(segment).read_text().split()
            return int(pid), start
        except (OSError, ValueError):
            return 0, ""

    def describe(self, scheduler_ids: list[str]) -> dict[str, JobInfo]:
        return {sid: self._describe_one(sid) for sid in scheduler_ids}

    def _describe_one(self, sid: str) -> JobInfo:
        paths, segment = parse_id(sid)
        if not paths.root.is_dir():
            return JobInfo(sid, JobState.UNKNOWN, reason=f"job directory {paths.root} was deleted")
        restarts = paths.read_restarts()
        pid, start = self._pid(paths, segment)
        # Liveness first: the script writes its status just before it exits.
        if pid and _alive(pid, start):
            started = paths.segment_started(segment).exists()
            return JobInfo(sid, JobState.RUNNING if started else JobState.PENDING, restarts,
                           reason="" if started else "waiting for the previous segment")
        status = paths.segment_status(segment)
        if status.is_file():
            state, _, code = status.read_text().strip().partition(" ")
            return JobInfo(sid, JobState(state) if state in JobState.__members__ else JobState.UNKNOWN,
                           restarts, reason=f"exit code {code}" if code else "",
                           cause="cancelled" if state == "CANCELLED" else None)
        if paths.cancel_marker(segment).exists():
            return JobInfo(sid, JobState.CANCELLED, restarts, reason="killed", cause="cancelled")
        return JobInfo(sid, JobState.FAILED, restarts,
                       reason="the job's process ended without writing a status (killed?)")

    def cancel(self, scheduler_id: str) -> None:
        paths, segment = parse_id(scheduler_id)
        if not paths.root.is_dir():
            return
        pid, start = self._pid(paths, segment)
        if not pid or not _alive(pid, start) or paths.segment_status(segment).exists():
            return
        paths.cancel_marker(segment).touch()
        # Remember the whole tree now: once the script dies its ranks are reparented.
        tree = {p: proc_starttime(p) for p in _descendants(pid) | {pid}}
        os.kill(pid, signal.SIGTERM)  # the script forwards TERM to the trainer ranks
        deadline = time.monotonic() + self.cancel_grace_s
        while time.monotonic() < deadline and any(_alive(p, s) for p, s in tree.items() if s):
            time.sleep(0.2)
        for p, s in tree.items():
            if s and _alive(p, s):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not paths.segment_status(segment).exists():
            atomic_write(paths.segment_status(segment), "CANCELLED 137\n")

    # -- larsctl doctor --------------------------------------------------------
    def doctor_checks(self, profile) -> list:
        """``larsctl doctor``'s rows: there is no scheduler to ask."""
        from larsctl.doctor.report import ok

        return [ok("scheduler", "local: jobs run on this machine as detached bash processes; no scheduler "
                                "to ask")]
