"""PBS Pro / OpenPBS: render a qsub script (pure), submit it, read states, cancel.

No library covers PBS (submitit and TorchX do not), so all of it is here.  The
script differs from the Slurm one in two ways:

* PBS has no ``--signal``: the script arms its own timer, a background
  ``sleep`` that sends USR2 to the batch shell at walltime minus the margin and
  is killed as soon as the launcher exits.
* PBS has no in-place requeue from inside a job: on exit 75 the script submits
  itself again with ``qsub -W depend=afterany:$PBS_JOBID -v LARSCTL_RESTARTS=n``,
  so the next run starts once this one has ended, and records the new id in
  ``<job_dir>/restarts`` (``next=<id>``; the job is then tracked under that id).
  In a ``--chain`` the next segment already waits on this job, so chained
  segments do not resubmit themselves: the following segment resumes instead.

States come from ``qstat -x -F json -f`` (PBS Pro 19+, finished jobs included);
where that is not understood (Torque, older PBS, and Slurm's Torque wrappers in
the tests) from the ``qstat -f`` text blocks.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from larsctl.facts.jobdir import JobPaths
from larsctl.facts.states import JobState
from larsctl.facts.sweepdir import SweepPaths
from larsctl.planning.walltime import job_walltime
from larsctl.schedulers.base import (
    BatchRequest,
    CommandLineScheduler,
    JobInfo,
    SchedulerError,
)
from larsctl.schedulers.batch import (
    FILE_DIRECTIVE,
    array_dispatch,
    body,
    directive_value,
    extra_directives,
    restart_record,
)
from larsctl.schedulers.launch import build_launch, value_of
from trainer.supervisor.causes import PBS_EXIT_CAUSES

# PBS job_state letters -> larsctl's.  F (PBS Pro) and C (Torque) are refined by the exit status.
PBS_STATES: dict[str, JobState] = {
    "Q": JobState.PENDING,   # queued
    "W": JobState.PENDING,   # waiting for its start time
    "H": JobState.PENDING,   # held (also: waiting on a dependency)
    "T": JobState.PENDING,   # in transit between servers
    "M": JobState.PENDING,   # moved to another server
    "R": JobState.RUNNING,
    "B": JobState.RUNNING,   # array job: at least one subjob started
    "E": JobState.RUNNING,   # exiting after having run
    "S": JobState.RUNNING,   # suspended
    "U": JobState.RUNNING,   # suspended (workstation busy)
    "X": JobState.COMPLETED, # subjob finished
    "F": JobState.COMPLETED,
    "C": JobState.COMPLETED,
}
# qstat exit codes that still answered: 153 = unknown job id (PBSE_UNKJOBID & 0xff),
# 35 = job only in history (PBSE_HISTJOBID & 0xff).
QSTAT_OK = (0, 35, 153)
WALLTIME_EXCEEDED = -29   # PBS Pro JOB_EXEC_KILL_WALLTIME
KILLED_BY_SIGTERM = 256 + 15  # qdel of a running job (PBS adds 256 to a signal number)


def pbs_state(letter: str, exit_status: int | None = None) -> JobState:
    state = PBS_STATES.get(letter.strip()[:1], JobState.UNKNOWN)
    if state is JobState.COMPLETED and exit_status not in (None, 0):
        if exit_status == WALLTIME_EXCEEDED:
            return JobState.TIMEOUT
        if exit_status in (KILLED_BY_SIGTERM, 128 + 15, 256 + 9, 128 + 9):
            return JobState.CANCELLED
        return JobState.FAILED
    return state


def _job_name(name: str) -> str:
    # PBS names: printable, no whitespace, starting with a letter; PBS Pro allows 236 characters.
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return (clean if clean[:1].isalpha() else "j" + clean)[:236]


def directives(spec, job_dir: Path, *, segment: int, segments: int) -> list[str]:
    return _lines(_options(spec, job_dir, segment=segment, segments=segments), spec.profile)


def _options(spec, job_dir: Path, *, segment: int, segments: int) -> dict[str, object]:
    """The qsub options of one segment: flag (with the resource name for -l) -> value."""
    p, plan = spec.profile, spec.plan
    cpus = max(1, p.cpus_per_node)
    select = f"select={plan.nodes}:ncpus={cpus}"
    if value_of(p.gpu_type) != "cpu":
        select += f":ngpus={plan.gpus_per_node}"
    select += f":mpiprocs={plan.gpus_per_node}"
    name = spec.name if segments == 1 else f"{spec.name}.{segment + 1}of{segments}"
    # A directory: PBS writes <name>.o<seq> there, one file per run (requeues included).
    opts = {"-N": _job_name(name), "-j": "oe", "-l select": select, "-l walltime": f"walltime={job_walltime(spec).text}",
            "-o": str(JobPaths(job_dir).logs) + "/", "-r": "y"}
    if p.partition:
        opts["-q"] = p.partition
    if p.account:
        opts["-P"] = p.account  # PBS Pro project (Torque spells it -A)
    return opts


def _lines(opts: dict[str, object], profile) -> list[str]:
    pairs = sorted((key.split()[0], value) for key, value in opts.items())
    return ([f"#PBS {flag} {directive_value(value, flag)}" for flag, value in pairs]
            + [f"#PBS {extra}" for extra in extra_directives(profile)])


def timer_lines(seconds: int) -> tuple[list[str], list[str]]:
    """(before, after) the launch: arm a USR2 for the batch shell in ``seconds``, then disarm it."""
    before = [
        "# PBS has no --signal: warn ourselves at walltime minus the margin.",
        "# shellcheck disable=SC2317  # runs in the background",
        "larsctl_timer() {",
        '  sleep "$1" &',
        "  local sleeper=$!",
        "  trap 'kill \"$sleeper\" 2>/dev/null; exit 0' TERM",
        '  wait "$sleeper" && kill -USR2 "$$"',  # $$ is the batch shell, also in this subshell
        "}",
        f"larsctl_timer {int(seconds)} &",
        "larsctl_timer_pid=$!",
    ]
    after = ['kill "$larsctl_timer_pid" 2>/dev/null', 'wait "$larsctl_timer_pid" 2>/dev/null']
    return before, after


def render(spec, job_dir: Path, script_path: Path, *, job_id: str, segment: int = 0,
           segments: int = 1, max_restarts: int = 0, array_task: bool = False) -> tuple[str, str]:
    """(script, launch line) for one chain segment.  ``array_task``: first run by a sweep's job
    array (render_array), which runs this script as it is; its requeues are ordinary jobs."""
    job_dir = Path(job_dir)
    p = spec.profile
    launch = build_launch(p, spec.plan, job_dir, scheduler="pbs", job_id=job_id)
    header = ["#!/bin/bash", FILE_DIRECTIVE,
              f"# larsctl job {directive_value(job_id, 'job id')} segment {segment + 1} of {segments}",
              *directives(spec, job_dir, segment=segment, segments=segments)]
    seconds = max(1, job_walltime(spec).seconds - int(p.signal_margin_seconds))
    before, after = timer_lines(seconds)
    # PBS spools stdout until the job ends; a file in logs/ can be followed while it runs.
    log = JobPaths(job_dir).pbs_log("${PBS_JOBID:-interactive}")
    before = [f'exec >> "{log}" 2>&1', *before]
    script = directive_value(script_path, "script path")
    requeue = [
        *(SUBJOB_AFTER if array_task else []),
        f'if new_id=$(qsub {AFTER_WORDS if array_task else AFTER_THIS} -v LARSCTL_RESTARTS="$next" {script}); then',
        "  " + restart_record("$PBS_JOBID", f" segment={segment} next=$new_id"),
        '  echo "larsctl: resubmitted as $new_id (restart $next)" >&2',
        "  exit 0",
        "fi",
    ]
    script = body(spec, job_dir, launch, header=header, requeue=requeue,
                  max_restarts=0 if segments > 1 else max_restarts,
                  restarts_expr='"${LARSCTL_RESTARTS:-0}"', before_launch=before, after_launch=after,
                  scheduler_id_expr='"${PBS_JOBID:-interactive}"', segment=segment,
                  scheduler="pbs")
    return script, launch.line


AFTER_THIS = '-W depend=afterany:"$PBS_JOBID"'
# PBS Pro's dependencies name jobs and whole arrays, not one subjob: a subjob resubmits itself
# without one (it ends right after), an ordinary job (a task requeued before) waits for itself.
SUBJOB_AFTER = ['if [ -n "${PBS_ARRAY_INDEX:-}" ]; then larsctl_after=(); '
                f"else larsctl_after=({AFTER_THIS}); fi"]
AFTER_WORDS = '${larsctl_after[@]+"${larsctl_after[@]}"}'


def render_array(spec, sweep: SweepPaths, number: int, *, name: str, count: int,
                 max_concurrent: int | None) -> str:
    """A sweep's job array ``number`` (qsub -J): ``count`` tasks (2 or more: PBS Pro has no array of
    one) of one shape (``spec``: the task that asks for the longest time), at most
    ``max_concurrent`` at once (-W max_run_subjobs); subjob i runs the job on line i+1 of the
    tasks file with that job's own script, which sends its output to the job's logs/."""
    if count < 2:
        raise ValueError(f"a PBS job array needs 2 or more subjobs, not {count}")
    opts = _options(spec, sweep.root, segment=0, segments=1)
    opts.update({"-N": _job_name(name), "-o": str(sweep.logs) + "/", "-J": f"0-{count - 1}"})
    if max_concurrent:
        opts["-W"] = f"max_run_subjobs={max_concurrent}"
    header = ["#!/bin/bash", FILE_DIRECTIVE,
              f"# larsctl sweep {directive_value(name, 'sweep id')}: job array {number}, {count} subjobs",
              *_lines(opts, spec.profile)]
    dispatch = array_dispatch(sweep.tasks(number), "PBS_ARRAY_INDEX", JobPaths(Path("")).script("pbs").name)
    return "\n".join([*header, *dispatch]) + "\n"


@dataclass
class PbsScheduler(CommandLineScheduler):
    """qsub / qstat / qdel."""

    name = "pbs"
    arrays = True
    system = "PBS"
    cancel_command = "qdel"

    def dryrun(self, spec, job_dir: Path, *, job_id: str, segment: int = 0, segments: int = 1,
               max_restarts: int = 0) -> BatchRequest:
        script_path = JobPaths(job_dir).script(self.name, segment)
        script, line = render(spec, job_dir, script_path, job_id=job_id, segment=segment,
                              segments=segments, max_restarts=max_restarts)
        return BatchRequest(script=script, script_path=script_path, submit_argv=["qsub"],
                            launch_line=line, segment=segment)

    # -- job arrays (a sweep) ----------------------------------------------------
    def dryrun_task(self, spec, job_dir: Path, *, job_id: str, max_restarts: int = 0) -> BatchRequest:
        """A job's first segment as a subjob of its sweep's array (the array submits it)."""
        script_path = JobPaths(job_dir).script(self.name)
        script, line = render(spec, job_dir, script_path, job_id=job_id, max_restarts=max_restarts,
                              array_task=True)
        return BatchRequest(script=script, script_path=script_path, submit_argv=[], launch_line=line)

    def dryrun_array(self, spec, sweep: SweepPaths, number: int, *, name: str, count: int,
                     max_concurrent: int | None) -> BatchRequest:
        script = render_array(spec, sweep, number, name=name, count=count, max_concurrent=max_concurrent)
        return BatchRequest(script=script, script_path=sweep.array_script(self.name, number),
                            submit_argv=["qsub"], launch_line="(each subjob: its job's own)")

    @staticmethod
    def task_id(array_id: str, index: int) -> str:
        """``1234[].server`` (what qsub -J prints) -> ``1234[3].server``."""
        head, sep, tail = array_id.partition("[]")
        return f"{head}[{index}]{tail}" if sep else f"{array_id}[{index}]"

    def schedule(self, request: BatchRequest, *, after: str | None = None,
                 after_kind: str = "afterany") -> str:
        self.write(request)
        argv = list(request.submit_argv)
        if after:
            argv += ["-W", f"depend={after_kind}:{after}"]
        # qsub's submission directory is where PBS (and Torque) put output it was
        # not told about: make that the job directory, never the user's cwd.
        r = self.run([*argv, str(request.script_path)], cwd=request.script_path.parent)
        job_id = r.stdout.strip()
        if r.returncode != 0 or not job_id:
            raise SchedulerError(f"qsub failed (exit {r.returncode}): {r.stderr.strip() or job_id}")
        return job_id

    def describe(self, scheduler_ids: list[str]) -> dict[str, JobInfo]:
        ids = [str(i) for i in scheduler_ids]
        if not ids:
            return {}
        r = self.run(["qstat", "-x", "-F", "json", "-f", *ids])
        found = None
        if r.returncode in QSTAT_OK and r.stdout.lstrip().startswith("{"):
            found = parse_qstat_json(r.stdout)
        if found is None:
            r = self.run(["qstat", "-f", *ids])
            if r.returncode not in QSTAT_OK and not r.stdout.strip():
                raise SchedulerError(f"qstat failed (exit {r.returncode}): {r.stderr.strip()}")
            found = parse_qstat_full(r.stdout)
        return {i: _lookup(found, i) for i in ids}

    # -- larsctl doctor --------------------------------------------------------
    def doctor_checks(self, profile) -> list:
        """``larsctl doctor``'s rows: qsub, qstat and qdel are on PATH, the server answers
        (qstat -B; Torque-style clients such as Slurm's answer qstat -Q), the profile's queue exists."""
        import shutil

        from larsctl.doctor.report import ask, check_commands, fail, last_line, ok

        rows = [check_commands("pbs", ("qsub", "qstat", "qdel"))]
        if not shutil.which("qstat"):
            return rows
        what, (answered, text) = "qstat -B", ask(self, ["qstat", "-B"])
        if not answered and ask(self, ["qstat", "-Q"])[0]:
            what, answered = "qstat -Q", True
        if not answered:
            return rows + [fail("pbs server", f"does not answer ({what}): {last_line(text)}",
                                "check that the PBS server runs (qstat -B) and PBS_SERVER / pbs.conf "
                                "point at it")]
        return rows + [ok("pbs server", f"answers ({what})")] + (
            [self._doctor_queue(profile)] if profile.partition else [])

    def _doctor_queue(self, profile):
        """The profile's queue among ``qstat -Q``'s (the names below its line of dashes)."""
        from larsctl.doctor.report import ask, fail, in_profile, last_line, ok, warn

        answered, text = ask(self, ["qstat", "-Q"])
        if not answered:
            return warn("pbs queue", f"cannot list queues: {last_line(text)}",
                        f"check `qstat -Q {profile.partition}` by hand")
        lines = text.splitlines()
        dashes = next((i for i, line in enumerate(lines) if line.startswith("---")), len(lines))
        queues = [line.split()[0] for line in lines[dashes + 1:] if line.strip()]
        if profile.partition not in queues:
            return fail("pbs queue", f"{profile.partition!r} is not a queue here (have: "
                                     f"{', '.join(queues) or 'none'})",
                        in_profile(profile, "set partition: in {file} to one of " + ", ".join(queues)))
        return ok("pbs queue", profile.partition)



def _lookup(found: dict[str, JobInfo], job_id: str) -> JobInfo:
    if job_id in found:
        return found[job_id]
    # "123" asked, "123.server" answered (or the other way round)
    short = job_id.split(".")[0]
    for key, info in found.items():
        if key.split(".")[0] == short:
            return JobInfo(job_id, info.state, info.restarts, info.reason)
    return JobInfo(job_id, JobState.UNKNOWN, reason="not known to qstat")


# -- pure parsers ------------------------------------------------------------------
def parse_qstat_json(text: str) -> dict[str, JobInfo] | None:
    """``qstat -x -F json -f`` (PBS Pro); None when the text is not that JSON."""
    try:
        jobs = json.loads(text).get("Jobs", {})
    except (ValueError, AttributeError):
        return None
    return {job_id: _info(job_id, attrs) for job_id, attrs in jobs.items()}


def parse_qstat_full(text: str) -> dict[str, JobInfo]:
    """``qstat -f`` text: ``Job Id: X`` followed by ``key = value`` lines."""
    jobs: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s*Job Id:\s*(\S+)", line)
        if m:
            current = jobs.setdefault(m.group(1), {})
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return {job_id: _info(job_id, attrs) for job_id, attrs in jobs.items()}


def _info(job_id: str, attrs: dict) -> JobInfo:
    status = attrs.get("Exit_status", attrs.get("exit_status"))
    try:
        status = int(status) if status is not None else None
    except ValueError:
        status = None
    state = pbs_state(str(attrs.get("job_state", "")), status)
    reason = "" if status in (None, 0) else f"exit {status}"
    comment = str(attrs.get("comment", ""))
    if state is JobState.PENDING and comment:
        reason = comment
    try:  # PBS Pro counts runs, server-side requeues included
        restarts = max(0, int(attrs.get("run_count", 1)) - 1)
    except ValueError:
        restarts = 0
    cause = PBS_EXIT_CAUSES.get(status) if state.is_terminal and status is not None else None
    return JobInfo(job_id, state, restarts=restarts, reason=reason, cause=cause.value if cause else None)
