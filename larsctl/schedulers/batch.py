"""The part of a batch script Slurm and PBS share (pure): environment, launch, signals, requeue.

The batch shell starts the launcher in the background and waits for it, so that it
can take signals.  On USR2 (the warning before the time limit; Slurm sends it with
``--signal=B:USR2@margin`` to the batch shell only, PBS through the script's own
timer) or TERM it sends USR2 to the trainer processes of this job on this node:
every process whose command line is ``python [-u] -m trainer --config <job.yaml>``,
found in /proc, never the launchers themselves (horovodrun, torchrun and a shell
die on USR2 and would take the ranks' pipes with them).  One rank is enough: the
trainer agrees on the stop across ranks at the next step, checkpoints and all
ranks exit 75.

After the launcher exits: exit 75, or any failure after a USR2 (horovodrun and
torchrun report a failed rank as 1, not 75), means "requeue" while the restart
count is below ``max_restarts``; each restart is appended to ``<job_dir>/restarts``
as ``key=value`` words.  After TERM (cancel, node shutdown) nothing is requeued:
the scheduler decides.  Otherwise the launcher's exit code is the job's.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from larsctl.config.profiles import split_directive
from larsctl.jobs.paths import RESTARTS, JobPaths
from larsctl.schedulers.launch import Launch, setup_lines
from trainer.exitcodes import REQUEUE

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
  for pid in $(larsctl_trainer_pids); do kill -USR2 "$pid" 2>/dev/null && sent=1; done
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

WAIT_LAUNCHER = r'''
larsctl_pid=$!
# A trapped signal ends `wait` early; wait again until the launcher itself has exited.
while :; do
  if [ -n "$larsctl_pending" ] && kill -0 "$larsctl_pid" 2>/dev/null; then
    sleep 1
    larsctl_forward
    continue
  fi
  wait "$larsctl_pid"
  rc=$?
  kill -0 "$larsctl_pid" 2>/dev/null || break
done
echo "larsctl: launcher exited with $rc" >&2
'''


def requeue_test(max_restarts: int, restarts_expr: str) -> str:
    """Shell condition: the trainer asked to be requeued and restarts are left."""
    return (f'if [ "$larsctl_signalled" != TERM ] && '
            f'{{ [ "$rc" -eq {REQUEUE} ] || {{ [ "$larsctl_signalled" = USR2 ] && [ "$rc" -ne 0 ]; }}; }}; then\n'
            f'  restarts={restarts_expr}\n'
            f'  if [ "$restarts" -lt {int(max_restarts)} ]; then')


def body(spec, job_dir: Path, launch: Launch, *, header: list[str], requeue: list[str],
         max_restarts: int, restarts_expr: str, before_launch: list[str] = (),
         after_launch: list[str] = ()) -> str:
    """The whole script: ``header`` (shebang and directives), then the shared body.

    ``requeue``: the scheduler's lines that resubmit/requeue (run inside the if).
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
        *before_launch,
        f"echo {q('larsctl: launch: ' + launch.line)} >&2",
        f"{launch.line} &",
        WAIT_LAUNCHER.strip("\n"),
        *after_launch,
        requeue_test(max_restarts, restarts_expr),
        "    next=$((restarts + 1))",
        *("    " + line for line in requeue),
        "  fi",
        f'  echo "larsctl: no restarts left ($restarts of {int(max_restarts)} used)" >&2',
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def restart_record(scheduler_id_expr: str, extra: str = "") -> str:
    """Shell line appending one restart to <job_dir>/restarts."""
    words = (f'time=$(date -u +%Y-%m-%dT%H:%M:%SZ) scheduler_id={scheduler_id_expr} '
             f'restart=$next rc=$rc signal=${{larsctl_signalled:-none}}{extra}')
    return f'echo "{words}" >> {RESTARTS}'
