"""Slurm: render an sbatch script (pure), submit it, read states, cancel.

What submitit gives and what it does not.  submitit (in the venv) is built around
pickled Python callables: its ``_make_sbatch_string`` always wraps the command in
its own ``srun --output ... python -m submitit.core._submit`` and its own log
paths, so it cannot render a script whose launcher is mpirun, horovodrun or
torchrun, and its USR2 handling lives in the pickled callable (``Checkpointable``)
rather than in the batch shell.  What fits is its output parsing:
``SlurmInfoWatcher.read_info`` (header + ``|``-separated rows, array ids
expanded) reads both our squeue and sacct output, and ``read_job_id`` parses
the ids.  Everything else (directives from a profile, the signal-forwarding and
requeue shell, squeue -> sacct -> ``sacct -c`` fallback, the state table) is
written here.

Directives are sorted and every value is shell-quoted (sbatch reads #SBATCH
values with shell quoting).  ``--dependency`` and ``--kill-on-invalid-dep`` are
passed on the sbatch command line by :meth:`SlurmScheduler.schedule`, since the id
of the previous chain segment is known only then.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from submitit.slurm.slurm import SlurmInfoWatcher

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
from trainer.supervisor.causes import SLURM_END_CAUSES

# Slurm's job states (squeue %T / sacct State, first word) -> larsctl's.
SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.REQUEUED,
    "REQUEUE_FED": JobState.REQUEUED,
    "REQUEUE_HOLD": JobState.REQUEUED,
    "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "DEADLINE": JobState.TIMEOUT,
    "TIMEOUT": JobState.TIMEOUT,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "PREEMPTED": JobState.PREEMPTED,
    "SPECIAL_EXIT": JobState.FAILED,
}


def _word(text: str) -> str:
    return text.split()[0].rstrip("+") if text.strip() else ""


def slurm_state(text: str) -> JobState:
    """``CANCELLED by 0`` -> CANCELLED; unknown strings -> UNKNOWN."""
    return SLURM_STATES.get(_word(text), JobState.UNKNOWN)


def slurm_cause(text: str) -> str | None:
    """The cause a final Slurm state gives (NODE_FAIL -> node_fail), None while it runs."""
    cause = SLURM_END_CAUSES.get(_word(text))
    return cause.value if cause else None


def _margin(seconds: int) -> int:
    return min(max(1, int(seconds)), 65535)  # Slurm's --signal accepts at most 65535 s


def directives(spec, job_dir: Path, *, job_id: str, segment: int, segments: int) -> list[str]:
    """``#SBATCH`` lines, sorted by option name, values quoted."""
    return _lines(_options(spec, job_dir, segment=segment, segments=segments), spec.profile)


def _options(spec, job_dir: Path, *, segment: int, segments: int) -> dict[str, object]:
    """The sbatch options of one segment (None: a flag without value)."""
    p, plan = spec.profile, spec.plan
    paths = JobPaths(job_dir)
    name = spec.name if segments == 1 else f"{spec.name}.{segment + 1}of{segments}"
    # engine ddp: one torchrun per node that starts the node's ranks and owns all its CPUs.
    tasks = 1 if value_of(p.engine) == "ddp" else plan.gpus_per_node
    opts: dict[str, object] = {
        "job-name": name,
        "nodes": plan.nodes,
        "ntasks-per-node": tasks,
        "cpus-per-task": max(1, p.cpus_per_node // tasks),
        "time": job_walltime(spec).text,  # the estimate with margin, at most p.walltime
        "signal": f"B:USR2@{_margin(p.signal_margin_seconds)}",
        "requeue": None,
        "open-mode": "append",
        # %j keeps the output of requeued runs apart; a literal % in the path is doubled.
        "output": _pattern(paths.slurm_log("out"), "%j"),
        "error": _pattern(paths.slurm_log("err"), "%j"),
        "chdir": str(job_dir),
    }
    if value_of(p.gpu_type) != "cpu":
        if value_of(p.gpu_directive) == "gpus-per-node":
            opts["gpus-per-node"] = plan.gpus_per_node
        else:
            opts["gres"] = f"gpu:{plan.gpus_per_node}"
    if p.partition:
        opts["partition"] = p.partition
    if p.account:
        opts["account"] = p.account
    if p.constraint:
        opts["constraint"] = p.constraint
    return opts


def _pattern(path: Path, *keep: str) -> str:
    """An sbatch file name pattern: a literal % doubled, the patterns ``keep`` (%j, %A...) kept."""
    text = str(path).replace("%", "%%")
    for pattern in keep:
        text = text.replace("%" + pattern, pattern)
    return text


def _lines(opts: dict[str, object], profile) -> list[str]:
    lines = []
    for key in sorted(opts):
        value = opts[key]
        lines.append(f"#SBATCH --{key}" if value is None
                     else f"#SBATCH --{key}={directive_value(value, key)}")
    return lines + [f"#SBATCH {extra}" for extra in extra_directives(profile)]


REQUEUE_TRIES, REQUEUE_WAIT_S = 8, 15
CANCEL_GRACE_S = 60.0  # for the ranks to checkpoint after TERM
# The watchdog ended the ranks: kill every step of this job (the launcher's tasks on every
# node, stopped ones included), never the batch script itself.
END_STEPS = [
    'for larsctl_step in $(squeue -h -s -j "$SLURM_JOB_ID" -o %i 2>/dev/null); do',
    '  case "$larsctl_step" in *.batch|*.extern) ;; *) scancel --signal=KILL "$larsctl_step" 2>/dev/null ;; esac',
    "done",
]


def _spare_nodes(spec) -> bool:
    """The cluster has nodes beyond the job's: a requeue after a node failure can leave the
    failed node out (with none to spare, the job waits for it to come back)."""
    return spec.profile.nodes > spec.plan.nodes


def _exclude_failed_node() -> list[str]:
    return ['if [ "$larsctl_failed_host" != - ]; then',
            '  scontrol update JobId="$SLURM_JOB_ID" ExcNodeList="$larsctl_failed_host" ||',
            '    echo "larsctl: could not exclude $larsctl_failed_host from the requeued job" >&2',
            "fi"]


# An array task's scheduler id: <array id>_<task>, the same across its requeues.
ARRAY_TASK_ID = "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"


def render(spec, job_dir: Path, *, job_id: str, segment: int = 0, segments: int = 1,
           max_restarts: int = 0, array_task: bool = False) -> tuple[str, str]:
    """(script, launch line) for one chain segment.  ``array_task``: run by a sweep's job array
    (render_array), whose script holds the directives; its scheduler id is the task's."""
    job_dir = Path(job_dir)
    launch = build_launch(spec.profile, spec.plan, job_dir, scheduler="slurm", job_id=job_id)
    sid = ARRAY_TASK_ID if array_task else "$SLURM_JOB_ID"
    header = ["#!/bin/bash", FILE_DIRECTIVE,
              f"# larsctl job {directive_value(job_id, 'job id')} segment {segment + 1} of {segments}",
              *(["# A task of its sweep's job array: the array's script has the directives and runs this one."]
                if array_task else directives(spec, job_dir, job_id=job_id, segment=segment, segments=segments))]
    requeue = [
        restart_record(sid, f" segment={segment}"),
        'echo "larsctl: requeueing job $SLURM_JOB_ID (restart $next)" >&2',
        # scontrol requeue ends this job; Slurm restarts it and counts SLURM_RESTART_COUNT.
        # (An array task's SLURM_JOB_ID is its own: the requeue takes this task only.)
        # A controller that is away (restarting) gets a few tries.
        f"for _ in {' '.join(str(i) for i in range(1, REQUEUE_TRIES + 1))}; do",
        '  if scontrol requeue "$SLURM_JOB_ID"; then',
        # With no node to spare nothing more is needed: Slurm itself holds a requeued job back
        # for its credential lifetime (120 s by default) and then waits for the job's full size
        # (a StartTime set here is refused: the job is not pending until this script ends).
        *("    " + line for line in (_exclude_failed_node() if _spare_nodes(spec) else [])),
        "    exit 0",
        "  fi",
        f'  echo "larsctl: scontrol requeue failed; trying again in {REQUEUE_WAIT_S}s" >&2',
        f"  sleep {REQUEUE_WAIT_S}",
        "done",
    ]
    script = body(spec, job_dir, launch, header=header, requeue=requeue,
                  max_restarts=max_restarts, restarts_expr='"${SLURM_RESTART_COUNT:-0}"',
                  scheduler_id_expr=f'"{sid}"', scheduler="slurm", segment=segment,
                  end_remote_ranks=END_STEPS,
                  # The script ends of its own after a cancel's TERM: Slurm would record FAILED.
                  # (An array task's SLURM_JOB_ID is its own: this cancels the task only.)
                  cancelled=['scancel "$SLURM_JOB_ID"'])
    return script, launch.line


def render_array(spec, sweep: SweepPaths, number: int, *, name: str, count: int,
                 max_concurrent: int | None) -> str:
    """A sweep's job array ``number``: ``count`` tasks of one shape (``spec``: the task that asks
    for the longest time), at most ``max_concurrent`` at once; task i runs the job on line i+1 of
    the tasks file with that job's own script, its output in the job's logs/."""
    opts = _options(spec, sweep.root, segment=0, segments=1)
    opts.update({"job-name": name, "chdir": str(sweep.root),
                 "array": f"0-{count - 1}" + (f"%{max_concurrent}" if max_concurrent else ""),
                 "output": _pattern(sweep.logs / "array-%A_%a.out", "%A", "%a"),
                 "error": _pattern(sweep.logs / "array-%A_%a.err", "%A", "%a")})
    header = ["#!/bin/bash", FILE_DIRECTIVE,
              f"# larsctl sweep {directive_value(name, 'sweep id')}: job array {number}, {count} tasks",
              *_lines(opts, spec.profile)]
    logs = JobPaths(Path(""))
    redirect = [f'exec >> "$larsctl_job_dir/{_task_log(logs, "out")}" 2>> "$larsctl_job_dir/{_task_log(logs, "err")}"']
    dispatch = array_dispatch(sweep.tasks(number), "SLURM_ARRAY_TASK_ID", logs.script("slurm").name, redirect)
    return "\n".join([*header, *dispatch]) + "\n"


def _task_log(logs: JobPaths, stream: str) -> str:
    """The job's own Slurm log (as a job's: logs/slurm-<its job id>.<stream>), for the shell."""
    return str(logs.slurm_log(stream)).replace("%j", "$SLURM_JOB_ID")


@dataclass
class SlurmScheduler(CommandLineScheduler):
    """sbatch / squeue / sacct / scancel."""

    name = "slurm"
    arrays = True
    system = "Slurm"
    cancel_command = "scancel"

    def dryrun(self, spec, job_dir: Path, *, job_id: str, segment: int = 0, segments: int = 1,
               max_restarts: int = 0) -> BatchRequest:
        script, line = render(spec, job_dir, job_id=job_id, segment=segment, segments=segments,
                              max_restarts=max_restarts)
        return BatchRequest(script=script, script_path=JobPaths(job_dir).script(self.name, segment),
                            submit_argv=["sbatch", "--parsable"], launch_line=line, segment=segment)

    # -- job arrays (a sweep) ----------------------------------------------------
    def dryrun_task(self, spec, job_dir: Path, *, job_id: str, max_restarts: int = 0) -> BatchRequest:
        """A job's first segment as a task of its sweep's array (the array submits it)."""
        script, line = render(spec, job_dir, job_id=job_id, max_restarts=max_restarts, array_task=True)
        return BatchRequest(script=script, script_path=JobPaths(job_dir).script(self.name),
                            submit_argv=[], launch_line=line)

    def dryrun_array(self, spec, sweep: SweepPaths, number: int, *, name: str, count: int,
                     max_concurrent: int | None) -> BatchRequest:
        script = render_array(spec, sweep, number, name=name, count=count, max_concurrent=max_concurrent)
        return BatchRequest(script=script, script_path=sweep.array_script(self.name, number),
                            submit_argv=["sbatch", "--parsable"], launch_line="(each task: its job's own)")

    @staticmethod
    def task_id(array_id: str, index: int) -> str:
        return f"{array_id}_{index}"

    # -- side effects ----------------------------------------------------------
    def schedule(self, request: BatchRequest, *, after: str | None = None,
                 after_kind: str = "afterany") -> str:
        self.write(request)
        argv = list(request.submit_argv)
        if after:
            argv += [f"--dependency={after_kind}:{after}", "--kill-on-invalid-dep=yes"]
        r = self.run([*argv, str(request.script_path)])
        if r.returncode != 0:
            raise SchedulerError(f"sbatch failed (exit {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
        # --parsable prints "id" or "id;cluster"
        job_id = r.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise SchedulerError(f"sbatch printed no job id: {r.stdout.strip()!r}")
        return job_id

    def cancel(self, scheduler_id: str) -> None:
        """TERM to the batch shell first (it passes TERM to the ranks, which checkpoint and stop
        at one step: the log ends "cancelled at step N"), then scancel whatever is left."""
        sid = str(scheduler_id)
        if self.describe([sid])[sid].state is JobState.RUNNING:
            if self.run(["scancel", "--batch", "--signal=TERM", sid]).returncode == 0:
                deadline = time.monotonic() + CANCEL_GRACE_S
                while time.monotonic() < deadline and self.describe([sid])[sid].state is JobState.RUNNING:
                    time.sleep(1)
        super().cancel(sid)

    def idle_nodes(self, profile) -> int | None:
        argv = ["sinfo", "-h", "-t", "idle", "-o", "%D"] + (["-p", profile.partition] if profile.partition else [])
        try:
            r = self.run(argv)
        except SchedulerError:
            return None
        counts = [int(w) for w in r.stdout.split() if w.isdigit()]
        return sum(counts) if r.returncode == 0 else None

    def describe(self, scheduler_ids: list[str]) -> dict[str, JobInfo]:
        ids = [str(i) for i in scheduler_ids]
        if not ids:
            return {}
        found = parse_squeue(self._squeue(ids))
        missing = [i for i in ids if i not in found]
        why = "not known to squeue or sacct"
        if missing:
            try:
                found.update(parse_sacct(self._sacct(missing)))
            except SchedulerError as e:  # no accounting at all: say so per job, keep the rest
                why = str(e)
        return {i: found.get(i, JobInfo(i, JobState.UNKNOWN, reason=why)) for i in ids}

    def _squeue(self, ids: list[str]) -> str:
        r = self.run(["squeue", "--noheader", "--states=all", "--jobs", ",".join(ids),
                       "--Format=JobArrayID:|,State:|,RestartCnt:|,Reason:"])
        if r.returncode != 0:
            if "Invalid job id" in r.stderr:
                return ""  # all of them have left the controller's memory: ask sacct
            raise SchedulerError(f"squeue failed (exit {r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def _sacct(self, ids: list[str]) -> str:
        fields = ["--parsable2", "--allocations", "--jobs", ",".join(ids),
                  "--format=JobID,State,ExitCode"]
        r = self.run(["sacct", *fields])
        if r.returncode != 0 or not r.stdout.strip():
            # No slurmdbd: read the jobcomp/filetxt log instead.
            r = self.run(["sacct", "-c", *fields])
        if r.returncode != 0:
            raise SchedulerError(f"sacct failed (exit {r.returncode}): {r.stderr.strip()}")
        return r.stdout

    # -- larsctl doctor --------------------------------------------------------
    def doctor_checks(self, profile) -> list:
        """``larsctl doctor``'s rows: the commands larsctl runs are on PATH, the controller
        answers (sinfo, else squeue), and the profile's partition is there and up."""
        import shutil

        from larsctl.doctor.report import ask, check_commands, fail, last_line, ok

        rows = [check_commands("slurm", ("sbatch", "squeue", "sacct", "scancel", "scontrol"))]
        sinfo = shutil.which("sinfo") is not None
        if not sinfo and not shutil.which("squeue"):
            return rows
        answered, text = ask(self, ["sinfo", "--noheader", "--format=%P|%a"] if sinfo
                             else ["squeue", "--noheader", "--me"])
        if not answered:
            return rows + [fail("slurm controller", f"does not answer: {last_line(text)}",
                                "check `scontrol ping`; on a login node SLURM_CONF (or the configless "
                                "set-up) must point at this cluster")]
        partitions = dict(line.strip().split("|", 1) for line in text.splitlines() if sinfo and "|" in line)
        if not partitions:
            return rows + [ok("slurm controller", f"answers ({'sinfo' if sinfo else 'squeue'})")]
        listing = ", ".join(f"{p} ({s})" for p, s in partitions.items())
        return rows + [ok("slurm controller", f"answers (sinfo): partitions {listing}"),
                       self._doctor_partition(profile, partitions)]

    @staticmethod
    def _doctor_partition(profile, partitions: dict[str, str]):
        """The profile's partition among sinfo's ``{name: state}`` (the default one ends in *)."""
        from larsctl.doctor.report import fail, in_profile, ok, warn

        states = {p.rstrip("*"): s for p, s in partitions.items()}
        wanted = profile.partition
        if wanted is None:
            default = [p.rstrip("*") for p in partitions if p.endswith("*")]
            return ok("slurm partition", "none set: jobs go to the default partition "
                                         + (default[0] if default else "(none marked)"))
        if wanted not in states:
            return fail("slurm partition", f"{wanted!r} is not a partition here (have: {', '.join(states)})",
                        in_profile(profile, "set partition: in {file} to one of " + ", ".join(states)))
        if states[wanted] != "up":
            return warn("slurm partition", f"{wanted} is {states[wanted]}",
                        f"jobs queue until it is up again (sinfo -p {wanted})")
        return ok("slurm partition", f"{wanted} (up)")


# -- pure parsers ------------------------------------------------------------------
def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Rows of ``squeue --noheader --Format=JobArrayID:|,State:|,RestartCnt:|,Reason:`` (JobArrayID: an
    array task as ``<array>_<task>``, how larsctl records it; any other job by its id)."""
    table = SlurmInfoWatcher().read_info("JobID|State|Restarts|Reason\n" + text)
    return {job_id: JobInfo(job_id, slurm_state(row.get("State", "")),
                            restarts=int(row.get("Restarts") or 0),
                            reason=_reason(row.get("Reason", "")), cause=slurm_cause(row.get("State", "")))
            for job_id, row in table.items()}


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """``sacct --parsable2 --format=JobID,State,ExitCode`` (header included)."""
    table = SlurmInfoWatcher().read_info(text)
    out = {}
    for job_id, row in table.items():
        state = slurm_state(row.get("State", ""))
        code = row.get("ExitCode", "")
        out[job_id] = JobInfo(job_id, state, reason="" if code in ("", "0:0") else f"exit {code}",
                              cause=slurm_cause(row.get("State", "")))
    return out


def _reason(text: str) -> str:
    return "" if text.strip() in ("", "None") else text.strip()
