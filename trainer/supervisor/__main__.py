"""``python -m trainer.supervisor begin|watch|finish|heartbeat``: what the batch script runs.

    attempt=$(python -m trainer.supervisor begin --job-dir D --scheduler-id ID --segment S --restart R)
    launcher ... &
    python -m trainer.supervisor watch --job-dir D --attempt "$attempt" --shell-pid $$ &
    ... the launcher exits (or the watchdog signals USR1 and the shell ends the ranks) ...
    read -r action host < <(python -m trainer.supervisor finish --job-dir D --attempt "$attempt" \
                                --rc "$rc" --signal "$signal" --restarts N --max-restarts M)

``begin`` prints the new segment's number, or ``stop`` when the segment before it died
with the batch shell (its node failed) and the job's policy stops after its cause.
``finish`` prints ``resume HOST`` or ``stop HOST`` (HOST: the failed node, or ``-``) and
one line for the log.  Exit code 2 and one line on bad arguments.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

from trainer.supervisor import heartbeat as heartbeat_mod
from trainer.supervisor.causes import Action, Cause, FaultSettings, SettingsError
from trainer.supervisor.records import AttemptPaths, new_attempt, numbers, read_attempt, read_attempts, write_json

SETTLE_S = 3.0  # how long finish waits for the side processes of ended ranks to say so


def job_document(job_dir: Path) -> dict:
    """The job's job.yaml ({} without one: a batch script run by hand in a bare directory)."""
    import yaml

    try:
        doc = yaml.safe_load((Path(job_dir) / "job.yaml").read_text()) or {}
    except FileNotFoundError:
        return {}
    return doc if isinstance(doc, dict) else {}


def job_settings(doc: dict) -> FaultSettings:
    return FaultSettings.from_dict(doc.get("faults"), "job.yaml: faults")


def job_ranks(doc: dict) -> int:
    return int((doc.get("plan") or {}).get("gpus") or 1)


def shape_of(doc: dict) -> dict:
    plan = doc.get("plan") or {}
    return {k: plan.get(k) for k in ("nodes", "gpus", "gpus_per_node", "per_gpu_batch", "batches_per_allreduce")}


def begin(args) -> int:
    doc = job_document(args.job_dir)
    verdict = _close_unfinished(args, doc)
    if verdict is not None:
        print(f"larsctl: not starting: {verdict}", file=sys.stderr, flush=True)
        print("stop")
        return 0
    paths = new_attempt(args.job_dir)
    write_json(paths.start, {
        "number": paths.number, "time": time.time(), "host": socket.gethostname(),
        "scheduler_id": args.scheduler_id, "segment": args.segment, "restart": args.restart,
        "hosts": [h for h in (args.hosts or "").split(",") if h], "ranks": job_ranks(doc), "shape": shape_of(doc)})
    print(paths.number)
    return 0


def _close_unfinished(args, doc: dict) -> str | None:
    """Close the segment before this one when its batch shell died without closing it.

    Returns why this run must not start (its policy stops after that cause), or None.
    Only a scheduler's own restart of the same segment (same scheduler id and segment) is
    held to the policy; a new segment (a chain, a ``larsctl resume``) always runs.
    """
    from trainer.supervisor.classify import classify, outlived
    from trainer.supervisor.policy import decide

    done = numbers(args.job_dir)
    if not done:
        return None
    last = read_attempt(AttemptPaths(Path(args.job_dir), done[-1]))
    if last.closed:
        return None
    # Its batch shell died without a word, so nobody asked the silent hosts: hosts whose heartbeats
    # went on after the first fell silent were alive then (the scheduler ended their ranks later).
    ending = classify(last, job_ranks(doc), alive=outlived(last) or None)
    automatic = (last.start or {}).get("scheduler_id") == args.scheduler_id and \
        (last.start or {}).get("segment") == args.segment
    history = [a.end for a in read_attempts(args.job_dir)[:-1] if a.end]
    # This run is restart number args.restart: it was allowed if the ones before left room.
    decision = decide(ending, history, job_settings(doc), restarts=max(0, args.restart - 1),
                      max_restarts=args.max_restarts) if automatic else None
    end = {"time": time.time(), "rc": None, "signal": None, **ending.to_dict(),
           "closed_by": f"segment after it ({'restart' if automatic else 'new segment'})",
           "action": decision.action.value if decision else Action.RESUME.value,
           "reason": decision.reason if decision else "a new segment was submitted"}
    write_json(last.paths.end, end)
    if decision is not None and decision.action is Action.STOP:
        return f"segment {last.number} ended with {ending.cause.value} ({ending.detail}); {decision.reason}"
    return None


def watch(args) -> int:
    from trainer.supervisor.watchdog import watch as run_watch

    doc = job_document(args.job_dir)
    return run_watch(AttemptPaths(Path(args.job_dir), args.attempt), job_ranks(doc), job_settings(doc),
                     args.shell_pid, args.launcher_pid, args.poll, args.probe)


def _settle(paths: AttemptPaths) -> None:
    """After the launcher ended: wait until every rank has ended in words (its record), through
    its side process (``gone``), or is silent (no heartbeat for two periods: its node died), at
    most two periods and a bit; then record the silences seen (observed.json, by this clock)."""
    from trainer.supervisor.classify import silence

    a = read_attempt(paths)
    if a.watchdog is not None or not a.heartbeats:
        return
    seen = (a.observed or {}).get("ranks", {})
    start = time.monotonic()
    changed = {r: start - float(seen.get(str(r), {}).get("silent_s", 0.0)) for r in a.heartbeats}
    seqs = {r: hb.get("seq") for r, hb in a.heartbeats.items()}
    quiet_after = max(silence(hb) for hb in a.heartbeats.values())
    deadline = start + max(SETTLE_S, quiet_after + 1)
    while True:
        now = time.monotonic()
        for r, hb in a.heartbeats.items():
            if hb.get("seq") != seqs.get(r):
                seqs[r], changed[r] = hb.get("seq"), now
        waiting = [r for r, hb in a.heartbeats.items()
                   if r not in a.ranks and not hb.get("gone") and now - changed.get(r, now) <= quiet_after]
        if not waiting or now >= deadline:
            break
        time.sleep(0.2)
        a = read_attempt(paths)
    ranks = {str(r): {**seen.get(str(r), {}), "silent_s": round(now - changed.get(r, now), 2)}
             for r in a.heartbeats}
    write_json(paths.observed, {**(a.observed or {}), "ranks": ranks})


def finish(args) -> int:
    from trainer.supervisor.classify import classify, silent_ranks
    from trainer.supervisor.liveness import answering, probe_timeout
    from trainer.supervisor.policy import decide

    doc = job_document(args.job_dir)
    paths = AttemptPaths(Path(args.job_dir), args.attempt)
    ranks = job_ranks(doc)
    _settle(paths)
    attempt = read_attempt(paths)
    signal = args.signal if args.signal not in ("", "none") else None
    silent = silent_ranks(attempt, set(attempt.ranks)) if attempt.watchdog is None else set()
    bound = float((attempt.observed or {}).get("bound_s") or job_settings(doc).bound_s)
    alive = answering({attempt.heartbeats[r].get("host") for r in silent}, args.probe,
                      probe_timeout(bound)) if silent else None
    ending = classify(attempt, ranks, rc=args.rc, signal=signal, alive=alive)
    history = [a.end for a in read_attempts(args.job_dir) if a.end and a.number < args.attempt]
    decision = decide(ending, history, job_settings(doc), args.restarts, args.max_restarts)
    write_json(paths.end, {"time": time.time(), "rc": args.rc, "signal": signal, **ending.to_dict(),
                           "action": decision.action.value, "reason": decision.reason})
    host = ending.host if ending.cause is Cause.NODE_FAIL and ending.host else "-"
    print(f"{decision.action.value} {host.split(',')[0]}")
    if ending.cause is Cause.CANCELLED:
        line = f"cancelled at step {ending.step if ending.step is not None else 0}"
    else:
        line = (f"segment {args.attempt} ended: {ending.cause.value} ({ending.detail}), launcher exit "
                f"{args.rc}; {decision.reason}")
    print(f"larsctl: {line}", file=sys.stderr, flush=True)
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"python -m trainer.supervisor: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m trainer.supervisor", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("begin")
    b.add_argument("--job-dir", required=True, type=Path)
    b.add_argument("--scheduler-id", default="")
    b.add_argument("--segment", type=int, default=0)
    b.add_argument("--restart", type=int, default=0)
    b.add_argument("--hosts", default="")
    b.add_argument("--max-restarts", type=int, default=0)
    w = sub.add_parser("watch")
    w.add_argument("--job-dir", required=True, type=Path)
    w.add_argument("--attempt", required=True, type=int)
    w.add_argument("--shell-pid", required=True, type=int)
    w.add_argument("--launcher-pid", required=True, type=int)
    w.add_argument("--poll", type=float)
    w.add_argument("--probe", help="a shell command that succeeds when host $1 answers")
    f = sub.add_parser("finish")
    f.add_argument("--job-dir", required=True, type=Path)
    f.add_argument("--attempt", required=True, type=int)
    f.add_argument("--rc", required=True, type=int)
    f.add_argument("--signal", default="")
    f.add_argument("--restarts", type=int, default=0)
    f.add_argument("--max-restarts", type=int, default=0)
    f.add_argument("--probe", help="a shell command that succeeds when host $1 answers")
    heartbeat_mod.add_arguments(sub.add_parser("heartbeat"))
    args = parser.parse_args(argv)
    try:
        return {"begin": begin, "watch": watch, "finish": finish, "heartbeat": heartbeat_mod.main}[args.command](args)
    except SettingsError as exc:
        print(f"python -m trainer.supervisor: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
