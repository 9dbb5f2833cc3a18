"""The part of a batch script Slurm, PBS and the local scheduler share (pure): environment,
launch, signals, supervision, and what happens after the segment ends.

The batch shell starts the launcher in the background and waits for it, so that it
can take signals.  On USR2 (the warning before the time limit; Slurm sends it with
``--signal=B:USR2@margin`` to the batch shell only, PBS through the script's own
timer) or TERM (cancel, node shutdown) it passes the signal on to the trainer processes
of this job on this node: every process whose command line is ``python [-u] -m trainer
--config <job.yaml>``, found in /proc, never the launchers themselves (horovodrun,
torchrun and a shell die on USR2 and would take the ranks' pipes with them).  One rank
is enough: the trainer agrees on the stop across ranks at the next step, checkpoints
and all ranks exit (USR2: preempted, requeue; TERM: cancelled).

Supervision (trainer.supervisor): before the launch, ``begin`` opens the segment's
record directory ``attempts/<n>/``; beside the launcher runs the watchdog, which sends
USR1 to the batch shell when a rank stopped making progress or a node went silent; the
shell then ends the ranks (``larsctl_end_ranks``: the launcher and every process below it,
and on Slurm every step of the job).  After the launcher exits, ``finish`` derives the
segment's cause and applies the job's policy: ``resume`` runs the scheduler's requeue
lines (each restart is appended to ``<job_dir>/restarts`` as ``key=value`` words) while
restarts are left, ``stop`` ends the job.  The launcher's exit code is the job's.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from larsctl.config.profiles import split_directive
from larsctl.facts.jobdir import RESTARTS, JobPaths
from larsctl.schedulers.launch import (
    Launch,
    container_prefix,
    hosts_expr,
    join,
    setup_lines,
    value_of,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def directive_value(value, what: str) -> str:
    """A value for a #SBATCH/#PBS line: quoted, and never a newline (it would end the comment)."""
    text = str(value)
    if _CONTROL.search(text):
        raise ValueError(f"{what}: control characters (newline, tab, ...) are not allowed: {text!r}")
    return shlex.quote(text)


def extra_directives(profile) -> list[str]:
    """The profile's own scheduler options (``directives:``), each value quoted."""
    out = []
    for text in profile.directives:
        flag, sep, value = split_directive(text)
        out.append(flag if value is None else f"{flag}{sep}{directive_value(value, flag)}")
    return out


# Whole-file: quoted values ($(...) in a job name, the launch line echoed as written)
# are meant to stay literal; shellcheck's SC2016 only notes that they do.
FILE_DIRECTIVE = "# shellcheck disable=SC2016"

SIGNAL_FUNCTIONS = r'''
# The trainer ranks of this job on this node (never the launchers).
# shellcheck disable=SC2317  # called from the traps below
larsctl_trainer_pids() {
  local proc
  for proc in /proc/[0-9]*; do
    tr '\0' '\n' 2>/dev/null < "$proc/cmdline" | awk -v pid="${proc#/proc/}" '
      NR == 1 { if ($0 !~ /(^|\/)python[0-9.]*$/) exit; next }
      want_module { if ($0 != "trainer") exit; module = 1; want_module = 0; next }
      !module && $0 == "-m" { want_module = 1; next }
      !module && $0 ~ /^-/ { next }
      !module { exit }
      want_config { if ($0 == ENVIRON["LARSCTL_CONFIG"]) found = 1; want_config = 0; next }
      $0 == "--config" { want_config = 1 }
      END { if (found) print pid }'
  done
}

larsctl_signalled=""
larsctl_pending=""
# shellcheck disable=SC2317  # called from the traps below
larsctl_forward() {
  local pid sent=""
  for pid in $(larsctl_trainer_pids); do kill -"$larsctl_signalled" "$pid" 2>/dev/null && sent=1; done
  # No rank yet (still starting): the wait loop tries again every second.
  if [ -n "$sent" ]; then larsctl_pending=""; else larsctl_pending=1; fi
}
# shellcheck disable=SC2317  # called from the traps below
larsctl_on_signal() {
  # USR2 = time limit near (requeue), TERM = cancelled or shut down (no requeue).
  if [ "$1" = TERM ] || [ -z "$larsctl_signalled" ]; then larsctl_signalled=$1; fi
  echo "larsctl: got SIG$1, asking the trainer to checkpoint" >&2
  larsctl_forward
}
trap 'larsctl_on_signal USR2' USR2
trap 'larsctl_on_signal TERM' TERM
'''

# The watchdog's verdict (USR1): end the launcher and every rank below it on this node, now.
END_RANKS = r'''
# shellcheck disable=SC2317  # called from the trap below
larsctl_descendants() {  # PID: it and every process below it
  ps -e -o pid= -o ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END { found[root] = 1
          do { more = 0; for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; more = 1 } }
          while (more)
          for (p in found) print p }'
}
# shellcheck disable=SC2317  # called from the trap below
larsctl_end_ranks() {
  local pids pid
  echo "larsctl: the watchdog ended the ranks: $(cat "$LARSCTL_JOB_DIR/attempts/$larsctl_attempt/watchdog.json" 2>/dev/null)" >&2
  pids=$(larsctl_descendants "$larsctl_pid")
  kill -TERM "$larsctl_pid" 2>/dev/null  # the launcher, so that it ends its ranks on other nodes
  for pid in $pids; do [ "$pid" = "$larsctl_pid" ] || kill -KILL "$pid" 2>/dev/null; done
  # In the background: with a node dead, slurmctld answers scancel only after it gave up on
  # that node (MessageTimeout), and an ssh to it waits for its connect timeout.
  larsctl_end_remote_ranks </dev/null &
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$larsctl_pid" 2>/dev/null || break; sleep 1; done
  for pid in $(larsctl_descendants "$larsctl_pid"); do kill -KILL "$pid" 2>/dev/null; done
}
trap 'larsctl_end_ranks' USR1
'''

WAIT_LAUNCHER = r'''
# A trapped signal ends `wait` early; wait again until the launcher itself has exited.
while :; do
  if [ -n "$larsctl_pending" ] && kill -0 "$larsctl_pid" 2>/dev/null; then
    sleep 1
    larsctl_forward
    continue
  fi
  wait "$larsctl_pid"
  rc=$?
  if kill -0 "$larsctl_pid" 2>/dev/null; then continue; fi
  # A trap ran while the launcher ended: this rc is the signal's; bash kept the launcher's.
  if [ "$rc" -gt 128 ]; then wait "$larsctl_pid" 2>/dev/null; last=$?; [ "$last" -eq 127 ] || rc=$last; fi
  break
done
kill -TERM "$larsctl_watchdog" 2>/dev/null
wait "$larsctl_watchdog" 2>/dev/null
'''


def supervisor_words(profile) -> str:
    """trainer.supervisor run by the job's Python (in its container)."""
    return join([*container_prefix(profile), profile.python, "-m", "trainer.supervisor"])


def supervise_function(profile) -> str:
    """``larsctl_supervise CMD ...`` (begin, finish)."""
    return f'larsctl_supervise() {{ {supervisor_words(profile)} "$@" --job-dir "$LARSCTL_JOB_DIR"; }}'


def remote_ranks_over_ssh(spec, scheduler: str) -> list[str]:
    """Lines that kill this job's ranks on the other hosts over ssh, for launches whose ranks no
    scheduler step holds (horovodrun across nodes; mpirun from a PBS nodefile)."""
    if spec.plan.nodes <= 1 or not (value_of(spec.profile.mpi) == "gloo" or scheduler == "pbs"):
        return []
    return [
        "local host ssh_pids=()",
        'for host in ${larsctl_hosts//,/ }; do',
        '  [ "$host" = "$(hostname)" ] && continue',
        '  timeout 20 ssh -o BatchMode=yes -o ConnectTimeout=5 "$host" "LARSCTL_CONFIG=$(printf %q "$LARSCTL_CONFIG") '
        'bash -s" <<< "$(declare -f larsctl_trainer_pids); for p in \\$(larsctl_trainer_pids); do '
        'kill -KILL \\"\\$p\\"; done" &',
        '  ssh_pids+=("$!")',
        "done",
        'if [ "${#ssh_pids[@]}" -gt 0 ]; then wait "${ssh_pids[@]}"; fi',
    ]


# How the supervisor asks whether a host still answers (trainer.supervisor.liveness): $1 is the host.
PROBES = {
    "slurm": 'srun --overlap --mpi=none --nodes=1 --ntasks=1 --nodelist="$1" --quiet true',
    "pbs": 'ssh -o BatchMode=yes -o ConnectTimeout=5 "$1" true',
    "local": "true",
}


def body(spec, job_dir: Path, launch: Launch, *, header: list[str], requeue: list[str],
         max_restarts: int, restarts_expr: str, scheduler_id_expr: str, scheduler: str, segment: int,
         before_launch: list[str] = (), after_launch: list[str] = (),
         end_remote_ranks: list[str] = (), cancelled: list[str] = ()) -> str:
    """The whole script: ``header`` (shebang and directives), then the shared body.

    ``requeue``: the scheduler's lines that resubmit/requeue (run when the policy says resume;
    ``$larsctl_failed_host`` names the node that failed, or is ``-``).
    ``scheduler_id_expr``: a shell word for this run's scheduler id.  ``end_remote_ranks``: lines
    that end the job's processes on other nodes when the watchdog fires (Slurm: its steps).
    ``cancelled``: lines run last when TERM stopped the segment (a cancel: the ranks were told
    to stop at one step), so that the scheduler records the job as cancelled, not failed.
    """
    q = shlex.quote
    config = JobPaths(job_dir).job_yaml
    lines = [
        *header,
        "set -uo pipefail",
        f"cd {q(str(job_dir))} || exit 1",
        f"export LARSCTL_JOB_DIR={q(str(job_dir))}",
        f"export LARSCTL_CONFIG={q(str(config))}",
        *setup_lines(spec.profile),
        *launch.setup,
        SIGNAL_FUNCTIONS.strip("\n"),
        supervise_function(spec.profile),
        "# shellcheck disable=SC2317  # called from larsctl_end_ranks",
        "larsctl_end_remote_ranks() {",
        *("  " + line for line in ([*end_remote_ranks, *remote_ranks_over_ssh(spec, scheduler)] or [":"])),
        "}",
        END_RANKS.strip("\n"),
        *before_launch,
        f"restarts={restarts_expr}",
        f"larsctl_hosts={hosts_expr(scheduler)}",
        f'if ! larsctl_attempt=$(larsctl_supervise begin --scheduler-id {scheduler_id_expr} --segment {int(segment)} '
        f'--restart "$restarts" --max-restarts {int(max_restarts)} --hosts "$larsctl_hosts"); then',
        '  echo "larsctl: cannot record the segment (python -m trainer.supervisor begin failed); not starting" >&2',
        "  exit 1",
        "fi",
        'if [ "$larsctl_attempt" = stop ]; then exit 1; fi',
        f"echo {q('larsctl: launch: ' + launch.line)} >&2",
        f"{launch.line} &",
        "larsctl_pid=$!",
        # A simple command, not the function: $! is then the watchdog itself, which TERM ends.
        f'{supervisor_words(spec.profile)} watch --job-dir "$LARSCTL_JOB_DIR" --attempt "$larsctl_attempt" '
        f'--shell-pid "$$" --launcher-pid "$larsctl_pid" --probe {q(PROBES[scheduler])} &',
        "larsctl_watchdog=$!",
        WAIT_LAUNCHER.strip("\n"),
        *after_launch,
        "# shellcheck disable=SC2034  # larsctl_failed_host: read by the requeue lines of some schedulers",
        'larsctl_action=stop larsctl_failed_host=-',
        "# shellcheck disable=SC2034",
        'if ! read -r larsctl_action larsctl_failed_host < <(larsctl_supervise finish --attempt "$larsctl_attempt" '
        f'--rc "$rc" --signal "${{larsctl_signalled:-none}}" --restarts "$restarts" --max-restarts {int(max_restarts)} '
        f'--probe {q(PROBES[scheduler])}); then',
        '  echo "larsctl: cannot classify the segment (python -m trainer.supervisor finish failed); not requeueing" >&2',
        "fi",
        'if [ "$larsctl_action" = resume ]; then',
        "  next=$((restarts + 1))",
        *("  " + line for line in requeue),
        *(['elif [ "${larsctl_signalled:-}" = TERM ]; then'] + ["  " + line for line in cancelled]
          if cancelled else []),
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def array_dispatch(tasks: Path, index_var: str, script_name: str, redirect: list[str] = ()) -> list[str]:
    """A sweep's job array, after its directives: the job directory of this task is line
    ``$index_var`` + 1 of ``tasks``; that job's own script (``script_name``, rendered as an array
    task) then replaces this shell, so a task runs the same body, supervision and requeue as any
    job.  ``redirect``: lines that send the output into the job directory first."""
    q = shlex.quote(str(tasks))
    return [
        "set -uo pipefail",
        f"larsctl_line=$(( {index_var} + 1 ))",
        f'larsctl_job_dir=$(sed -n "${{larsctl_line}}p" {q})',
        f'if [ -z "$larsctl_job_dir" ] || [ ! -f "$larsctl_job_dir/{script_name}" ]; then',
        f'  echo "larsctl: array task ${index_var}: no job script on line $larsctl_line of "{q} >&2',
        "  exit 1",
        "fi",
        *redirect,
        f'exec bash "$larsctl_job_dir/{script_name}"',
    ]


def restart_record(scheduler_id_expr: str, extra: str = "") -> str:
    """Shell line appending one restart to <job_dir>/restarts."""
    words = (f'time=$(date -u +%Y-%m-%dT%H:%M:%SZ) scheduler_id={scheduler_id_expr} '
             f'restart=$next rc=$rc signal=${{larsctl_signalled:-none}}{extra}')
    return f'echo "{words}" >> {RESTARTS}'
