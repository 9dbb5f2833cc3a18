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

from larsctl.jobdir import JobPaths, atomic_write
from larsctl.launch import LaunchError, build_launch, join, setup_lines
from larsctl.schedulers.base import BatchRequest, JobInfo, JobState, Scheduler, SchedulerError

REQUEUE = 75  # trainer.exitcodes.REQUEUE (not imported: the trainer pulls in torch)
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


def with_rank_logs(words: tuple, directory: Path) -> list:
    """The launch words plus the launcher's per-rank log option, where it has one.

    horovodrun writes <dir>/rank.N/{stdout,stderr} and still prints to the
    console; torchrun writes <dir>/<run>/attempt_K/N/ and with ``--tee 3`` also
    prints, each line prefixed with "[defaultN]:".
    """
    out = list(words)
    for i, word in enumerate(words):
        if word == "horovodrun":
            return out[:i + 1] + ["--output-filename", str(directory)] + out[i + 1:]
        if word == "torch.distributed.run":
            return out[:i + 1] + ["--log-dir", str(directory), "--tee", "3"] + out[i + 1:]
    return out


def render_script(*, job_id: str, paths: JobPaths, segment: int, max_restarts: int,
                  setup: list[str], launch_line: str) -> str:
    """The bash script of one segment (pure; every value is shell-quoted)."""
    q = shlex.quote
    lines = [
        "#!/usr/bin/env bash",
        "# shellcheck disable=SC2034,SC2317  # launch variables; functions called from traps",
        f"# larsctl local job {job_id}, segment {segment}; runs on its own: "
        f"bash {q(str(paths.script('local', segment)))}",
        "set -uo pipefail",
        f"job_dir={q(str(paths.root))}",
        f"max_restarts={int(max_restarts)}",
        f"status_file={q(str(paths.segment_status(segment)))}",
        f"started_file={q(str(paths.state / f'segment-{segment}.started'))}",
        f"cancel_file={q(str(paths.cancel_marker(segment)))}",
        f"restarts_file={q(str(paths.restarts))}",
        f"metrics={q(str(paths.metrics))}",
        'cd "$job_dir" || exit 1',
        *setup,
    ]
    lines.append(_BODY.replace("@LAUNCH@", launch_line))
    return "\n".join(lines) + "\n"


# The part of the script that does not depend on the job.  Written as plain
# bash so a user can read, run and debug it without larsctl.
_BODY = r"""
finish() {  # STATE EXIT_CODE, written atomically: status readers never see half a line
  printf '%s %s\n' "$1" "$2" > "$status_file.tmp" && mv -f "$status_file.tmp" "$status_file"
}
trainer_pids() {  # the trainer ranks below this script (launchers may start them in new sessions)
  local p
  for p in $(pgrep -P "$1" 2>/dev/null); do
    # python itself, not a `bash -c "python -m trainer"` wrapper (USR2 would kill a shell)
    if [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == python* ]] &&
       tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- '-m trainer '; then
      echo "$p"
    fi
    trainer_pids "$p"
  done
}
forward() {  # send signal $1 to the trainer ranks only: the launcher would die of USR2
  local pids
  pids=$(trainer_pids "$$")
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086  # one pid per word
    kill -s "$1" $pids 2>/dev/null || true
  fi
}
on_cancel() { touch "$cancel_file"; forward TERM; }
trap 'forward USR2' USR2
trap on_cancel TERM INT HUP

alive() {  # PID STARTTIME: that very process still runs (safe against pid reuse)
  local stat fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r -a fields <<< "${stat##*) }"
  [ "${fields[0]}" != Z ] && [ "${fields[19]}" = "$2" ]
}
# Chain segments and resumes wait for the segment before them (set by larsctl).
if [ -n "${LARSCTL_AFTER_PID:-}" ]; then
  while [ ! -e "$cancel_file" ] && alive "$LARSCTL_AFTER_PID" "${LARSCTL_AFTER_START:-}"; do
    sleep 1
  done
  if [ ! -e "$cancel_file" ] && [ "${LARSCTL_AFTER_KIND:-afterany}" = afterok ] &&
     ! grep -q '^COMPLETED' "${LARSCTL_AFTER_STATUS:-/nonexistent}" 2>/dev/null; then
    finish CANCELLED 1
    echo "larsctl: dependency ${LARSCTL_AFTER_STATUS:-} did not complete; not starting" >&2
    exit 1
  fi
fi
if [ -e "$cancel_file" ]; then finish CANCELLED 143; exit 143; fi
touch "$started_file"

restarts=$(cat "$restarts_file" 2>/dev/null || echo 0)
while true; do
  lines_before=$(wc -l < "$metrics" 2>/dev/null || echo 0)
  @LAUNCH@ &
  child=$!
  rc=0
  wait "$child" || rc=$?
  # A trapped signal interrupts `wait`; wait again for the launcher's own exit code.
  while kill -0 "$child" 2>/dev/null; do rc=0; wait "$child" || rc=$?; done
  # horovodrun and torchrun report any failed rank as 1, so the trainer's
  # "preempted" event after this attempt's start also means "requeue".
  if [ "$rc" -ne 0 ] && tail -n "+$((lines_before + 1))" "$metrics" 2>/dev/null | grep -q '"event": *"preempted"'; then
    rc=75
  fi
  if [ -e "$cancel_file" ]; then finish CANCELLED "$rc"; exit "$rc"; fi
  if [ "$rc" -eq 75 ] && [ "$restarts" -lt "$max_restarts" ]; then
    restarts=$((restarts + 1))
    printf '%s\n' "$restarts" > "$restarts_file.tmp" && mv -f "$restarts_file.tmp" "$restarts_file"
    echo "larsctl: trainer asked to be requeued; restart $restarts of $max_restarts" >&2
    continue
  fi
  break
done
if [ "$rc" -eq 0 ]; then finish COMPLETED 0; else finish FAILED "$rc"; fi
exit "$rc"
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
        line = join(with_rank_logs(launch.words, paths.rank_logs))
        setup = setup_lines(profile)
        if not profile.venv:
            # No venv in the profile: use the environment larsctl itself runs in
            # (python, horovodrun and torchrun next to this interpreter).
            setup.insert(0, f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
        script = render_script(job_id=job_id, paths=paths, segment=segment,
                               max_restarts=max_restarts, setup=[*setup, *launch.setup],
                               launch_line=line)
        return BatchRequest(script=script, script_path=paths.script("local", segment),
                            submit_argv=["bash"], launch_line=line, segment=segment)

    def schedule(self, request: BatchRequest, *, after: str | None = None,
                 after_kind: str = "afterany") -> str:
        paths = JobPaths(request.script_path.parent)
        atomic_write(request.script_path, request.script, 0o755)
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
            started = (paths.state / f"segment-{segment}.started").exists()
            return JobInfo(sid, JobState.RUNNING if started else JobState.PENDING, restarts,
                           reason="" if started else "waiting for the previous segment")
        status = paths.segment_status(segment)
        if status.is_file():
            state, _, code = status.read_text().strip().partition(" ")
            return JobInfo(sid, JobState(state) if state in JobState.__members__ else JobState.UNKNOWN,
                           restarts, reason=f"exit code {code}" if code else "")
        if paths.cancel_marker(segment).exists():
            return JobInfo(sid, JobState.CANCELLED, restarts, reason="killed")
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
