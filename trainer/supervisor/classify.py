"""One cause for a segment, from its records, the launcher's exit code and the batch shell's signal.

Evidence, strongest first:

1. the watchdog's verdict (it ended the ranks: ``hang`` or ``node_fail``);
2. what the ranks said of themselves (trainer.supervisor.records, ``rank.<R>.json``):
   ``diverged``, ``bad_input``, ``oom``, ``crash`` (an exception that is not merely a peer
   going away), then ``cancelled``, ``preempted``, ``completed``;
3. ranks that ended without a word: their side process saw them go (the earliest is the one
   that failed; the node's OOM killer running meanwhile makes it ``oom``), or killed them
   itself (``deadman``: no progress for twice the bound -> ``hang``); ranks whose
   heartbeat went silent while the others ended -> ``node_fail``, unless their host still
   answers (``alive``): then the launcher tore their step down with them;
4. what the scheduler recorded (``scheduler``: a cause it maps its own end state to, with
   its words, e.g. Slurm's NODE_FAIL or TIMEOUT), for segments whose batch shell died;
5. the batch shell's signal and the launcher's exit code (trainer.exitcodes), the contract
   of trainers that keep no records.

Errors that only say a peer went away (a closed connection, a collective timeout, Horovod
shut down) are "victim" errors: they never name the cause when anything else does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from trainer import exitcodes
from trainer.supervisor.causes import Cause
from trainer.supervisor.records import Attempt

# Exception texts that mean "a peer failed", not "this rank failed".
PEER_FAILURE = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe|Timed out waiting|timed out|"
    r"Horovod has been shut down|HorovodInternalError|ncclRemoteError|remote process exited|"
    r"NCCL communicator was aborted|DistNetworkError|Socket Timeout|Connection refused|"
    r"failed to (?:recv|send)|Read error|Gloo.*(?:closed|reset)", re.IGNORECASE)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
# Strongest first: the cause a rank's own record gives the segment.
_RANK_PRECEDENCE = (Cause.DIVERGED, Cause.BAD_INPUT, Cause.OOM, Cause.CRASH, Cause.CANCELLED, Cause.PREEMPTED)


@dataclass(frozen=True)
class Ending:
    cause: Cause
    detail: str
    host: str | None = None
    ranks: tuple[int, ...] = ()
    step: int | None = None
    error: str | None = None  # what a crash loop compares: the same error at the same step

    def to_dict(self) -> dict:
        return {"cause": self.cause.value, "detail": self.detail, "host": self.host, "ranks": list(self.ranks),
                "step": self.step, "error": self.error}


def is_peer_failure(text: str) -> bool:
    return bool(PEER_FAILURE.search(text or ""))


def error_signature(exc_type: str, message: str) -> str:
    """The error as a crash loop compares it: type and first line, addresses blanked."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return _ADDRESS.sub("0x?", f"{exc_type}: {first}" if first else exc_type)[:200]


def _where(rec: dict) -> str:
    return f"rank {rec.get('rank')} on {rec.get('host')}" if rec.get("host") else f"rank {rec.get('rank')}"


def classify(attempt: Attempt, ranks: int, rc: int | None = None, signal: str | None = None,
             scheduler: tuple[Cause, str] | None = None, alive: set[str] | None = None) -> Ending:
    """The cause of ``attempt`` (``ranks`` ranks); ``scheduler``: (cause, words) from the scheduler's
    record of this run, when the batch shell could not say (it died, or was killed); ``alive``: hosts
    that answered a probe (trainer.supervisor.liveness): their silent ranks were ended with the
    step, their node did not die."""
    if attempt.watchdog:
        w = attempt.watchdog
        hosts = w.get("hosts") or []
        return Ending(Cause(w["cause"]), w.get("detail", ""), ",".join(hosts) or None,
                      tuple(w.get("ranks") or ()), w.get("step"), f"{w['cause']}: {','.join(hosts)}")
    recs = attempt.ranks
    primary = [r for r in recs.values() if not r.get("victim")]
    for cause in _RANK_PRECEDENCE:
        found = sorted((r for r in primary if r.get("cause") == cause.value), key=lambda r: r.get("rank", 0))
        if found:
            r = found[0]
            host = None if cause in (Cause.CANCELLED, Cause.PREEMPTED) else r.get("host")  # no fault, no host
            return Ending(cause, r.get("detail") or f"{_where(r)}: {cause.value}", host,
                          tuple(x.get("rank") for x in found), r.get("step"), r.get("error"))
    if len(recs) >= ranks and all(r.get("cause") == Cause.COMPLETED.value for r in recs.values()):
        r = recs[min(recs)]
        return Ending(Cause.COMPLETED, r.get("detail") or "completed", None, (), r.get("step"))
    silent = silent_ranks(attempt, set(recs))
    torn = {r: attempt.heartbeats[r] for r in silent if alive and attempt.heartbeats[r].get("host") in alive}
    silent -= set(torn)
    quiet = {rank: hb for rank, hb in attempt.heartbeats.items() if rank not in recs and hb.get("gone")}
    absent = _absent_hosts(attempt, ranks)
    if absent and not silent:
        never = sorted(set(range(ranks)) - set(attempt.heartbeats) - set(recs))
        return Ending(Cause.NODE_FAIL, f"rank(s) {', '.join(map(str, never))} never started: no heartbeat from "
                                       f"{', '.join(absent)} of the allocation", ",".join(absent), tuple(never),
                      _last_step(attempt), f"node_fail: {','.join(absent)}")
    if silent and (quiet or scheduler is None or scheduler[0] is Cause.NODE_FAIL):
        hosts = sorted({attempt.heartbeats[r].get("host") or "?" for r in silent})
        step = min(int(attempt.heartbeats[r].get("step") or 0) for r in silent)
        return Ending(Cause.NODE_FAIL, f"the heartbeat of {', '.join(hosts)} (rank(s) "
                                       f"{', '.join(map(str, sorted(silent)))}) stopped at step {step}",
                      ",".join(hosts), tuple(sorted(silent)), step, f"node_fail: {','.join(hosts)}")
    deadman = [hb for hb in quiet.values() if hb["gone"] == "deadman"]
    if deadman:
        hb = min(deadman, key=lambda h: h.get("time", 0))
        return Ending(Cause.HANG, f"{_where(hb)} made no progress at step {hb.get('step')} for "
                                  f"{hb.get('idle_s')}s; its heartbeat process killed it",
                      hb.get("host"), (hb["rank"],), hb.get("step"), f"hang: rank {hb['rank']}")
    if quiet or torn:
        hb = min((quiet or torn).values(), key=lambda h: h.get("time", 0))
        if hb.get("oom_kills"):
            return Ending(Cause.OOM, f"{_where(hb)} was killed at step {hb.get('step')} while the node's OOM "
                                     "killer ran", hb.get("host"), (hb["rank"],), hb.get("step"), "oom: killed")
        if scheduler is None or scheduler[0] in (Cause.CRASH, Cause.UNKNOWN):
            return Ending(Cause.CRASH, f"{_where(hb)} ended at step {hb.get('step')} without a record (killed "
                                       "by a signal?)", hb.get("host"), (hb["rank"],), hb.get("step"),
                          "crash: killed by a signal")
    victims = sorted((r for r in recs.values() if r.get("victim")), key=lambda r: r.get("time", 0))
    if scheduler is not None and scheduler[0] is not Cause.UNKNOWN:
        return Ending(scheduler[0], scheduler[1], step=_last_step(attempt))
    step = _last_step(attempt)
    if signal == "TERM":
        return Ending(Cause.CANCELLED, f"the batch script got SIGTERM (at step {step})", step=step)
    by_code = {exitcodes.OK: (Cause.COMPLETED, "the launcher exited 0"),
               exitcodes.REQUEUE: (Cause.PREEMPTED, f"exit {exitcodes.REQUEUE}: stopped to be requeued"),
               exitcodes.BAD_INPUT: (Cause.BAD_INPUT, "the trainer exited 2 (bad input: see the log)"),
               exitcodes.DIVERGED: (Cause.DIVERGED, "the trainer exited 65 (diverged)")}
    if rc in by_code and not victims:
        cause, detail = by_code[rc]
        return Ending(cause, detail, step=step)
    if signal == "USR2" and rc:
        return Ending(Cause.PREEMPTED, f"USR2, then the launcher exited {rc}", step=step)
    if rc and not attempt.heartbeats and not recs and (attempt.start or {}).get("ranks"):
        return Ending(Cause.CRASH, f"no rank started: the launcher exited {rc} (see the log)", step=step,
                      error=f"launch failed: exit {rc}")
    if victims:
        r = victims[0]
        return Ending(Cause.CRASH, r.get("detail") or f"{_where(r)}: a peer failed", r.get("host"),
                      (r.get("rank"),), r.get("step"), r.get("error"))
    if scheduler is not None:
        return Ending(Cause.UNKNOWN, scheduler[1], step=step)
    why = f"the launcher exited with {rc}" if rc is not None else "the batch script did not record its end"
    return Ending(Cause.UNKNOWN, f"{why}; no rank recorded why", step=step)


def _absent_hosts(attempt: Attempt, ranks: int) -> list[str]:
    """Hosts of the allocation that no rank reported from, when some ranks never started (their
    node could not be reached).  Only when the allocation's names are the heartbeats' names."""
    expected = set((attempt.start or {}).get("hosts") or ())
    seen = {hb.get("host") for hb in attempt.heartbeats.values()}
    if len(set(attempt.heartbeats) | set(attempt.ranks)) >= ranks or not (seen & expected):
        return []
    return sorted(expected - seen)


def outlived(attempt: Attempt) -> set[str]:
    """Hosts whose heartbeats went on for more than a period after the first host fell silent (by
    the writers' clocks): for a segment nobody watched to its end, the hosts that were alive."""
    last: dict[str, float] = {}
    for hb in attempt.heartbeats.values():
        if hb.get("host"):
            last[hb["host"]] = max(last.get(hb["host"], 0.0), float(hb.get("time") or 0.0))
    if len(last) < 2:
        return set()
    period = max(float(hb.get("period") or 1.0) for hb in attempt.heartbeats.values())
    first = min(last.values())
    return {host for host, t in last.items() if t > first + period}


def silence(heartbeat: dict) -> float:
    """Seconds without a new heartbeat record after which its writer counts as gone with its node."""
    return 2 * float(heartbeat.get("period") or 1.0) + 1


def silent_ranks(attempt: Attempt, ended: set[int]) -> set[int]:
    """Ranks whose heartbeat went silent: without a last record, and seen silent by the
    watchdog (observed.json) for more than two heartbeat periods."""
    seen = (attempt.observed or {}).get("ranks", {})
    out = set()
    for rank, hb in attempt.heartbeats.items():
        if rank in ended or hb.get("gone"):
            continue
        view = seen.get(str(rank))
        if view is None or view.get("silent_s", 0) >= silence(hb):
            out.add(rank)
    return out


def _last_step(attempt: Attempt) -> int | None:
    steps = [int(r.get("step") or 0) for r in attempt.ranks.values()]
    steps += [int(h.get("step") or 0) for h in attempt.heartbeats.values()]
    return max(steps) if steps else None
