"""The watchdog beside the launcher: notices a silent node or a rank that stopped making
progress, records why, and asks the batch shell to end the ranks.

It runs on the batch script's node (``python -m trainer.supervisor watch``) for the life of
the launcher and reads the ranks' heartbeat files (trainer.supervisor.heartbeat).  Every
age is measured by its own clock, from the moment it saw a file or a counter change, so
clocks that differ between nodes do not matter.

The bound B is the larger of the job's ``bound_s`` and BOUND_STEPS median step times (as
seen here).  Half of it is allowed for the verdict, the rest for ending the ranks and
releasing the allocation:

* a rank whose heartbeat file did not change for B/2 (its side process is gone with its
  node) -> ``node_fail``, naming the host, when every rank seen on that host is silent;
  ``hang`` otherwise.  Once another rank has ended (its peers fail at once when a node
  dies: their connections close), two heartbeat periods of silence are enough: a rank
  whose side process lives writes every period, busy or not;
* a rank whose counter did not move for B/2 (``startup_s`` before its first step) while its
  heartbeat goes on -> ``hang``, naming the rank that holds the others up: one stopped by a
  signal (state T), else one waiting for data, else the one(s) furthest behind.

Ranks that ended (their side process wrote ``gone``, or the rank wrote its end record) are
not judged: the launcher and the batch script deal with them.  The verdict goes to
``watchdog.json``, then SIGUSR1 to the batch shell, which ends the ranks
(``larsctl_end_ranks``).  On SIGTERM (the launcher ended by itself) the watchdog writes
what it saw last to ``observed.json``, which classify reads.
"""
from __future__ import annotations

import os
import signal
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from trainer.supervisor.causes import BOUND_STEPS, Cause, FaultSettings
from trainer.supervisor.classify import silence
from trainer.supervisor.heartbeat import proc_state
from trainer.supervisor.liveness import answering, probe_timeout
from trainer.supervisor.records import AttemptPaths, by_rank, read_json, write_json

STEP_SAMPLES = 50


@dataclass
class RankView:
    """One rank as the watchdog saw it (times by the watchdog's monotonic clock)."""

    seq: int | None = None
    counter: int | None = None
    seen_at: float = 0.0       # when its heartbeat file last changed
    moved_at: float = 0.0      # when its counter last moved
    step: int = 0
    phase: str = "startup"
    state: str | None = None
    host: str | None = None
    gone: str | None = None
    period: float | None = None  # its side process's heartbeat period


@dataclass(frozen=True)
class Verdict:
    cause: Cause
    ranks: tuple[int, ...]
    hosts: tuple[str, ...]
    step: int
    detail: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cause"] = self.cause.value
        d["ranks"], d["hosts"] = list(self.ranks), list(self.hosts)
        return d


@dataclass
class Observer:
    """Folds heartbeat records into RankViews and step times; ``judge`` decides (pure given now)."""

    ranks: int
    settings: FaultSettings
    started: float
    views: dict[int, RankView] = field(default_factory=dict)
    step_times: deque = field(default_factory=lambda: deque(maxlen=STEP_SAMPLES))
    _last_step: tuple[float, int] | None = None

    def update(self, heartbeats: dict[int, dict], ended: set[int], now: float) -> None:
        for rank, hb in heartbeats.items():
            v = self.views.setdefault(rank, RankView(seen_at=now, moved_at=now))
            if hb.get("seq") != v.seq:
                v.seq, v.seen_at = hb.get("seq"), now
            if hb.get("counter") != v.counter:
                v.counter, v.moved_at = hb.get("counter"), now
            v.step, v.phase, v.state = int(hb.get("step") or 0), hb.get("phase", "startup"), hb.get("state")
            v.host, v.gone, v.period = hb.get("host"), hb.get("gone"), hb.get("period")
        for rank in ended:
            self.views.setdefault(rank, RankView(seen_at=now, moved_at=now)).gone = "ended"
        training = [v.step for v in self.views.values() if v.gone is None and v.phase not in ("startup", "done")]
        if training:
            low = min(training)
            if self._last_step is not None and low > self._last_step[1]:
                self.step_times.append((now - self._last_step[0]) / (low - self._last_step[1]))
            if self._last_step is None or low != self._last_step[1]:
                self._last_step = (now, low)

    def bound(self) -> float:
        median = statistics.median(self.step_times) if self.step_times else 0.0
        return max(float(self.settings.bound_s), BOUND_STEPS * median)

    def judge(self, now: float) -> Verdict | None:
        limit = self.bound() / 2
        live = {r: v for r, v in self.views.items() if v.gone is None}
        if len(self.views) < self.ranks and now - self.started > self.settings.startup_s:
            missing = tuple(r for r in range(self.ranks) if r not in self.views)
            return Verdict(Cause.HANG, missing, (), 0, f"rank(s) {_ranks(missing)} did not start within "
                                                       f"{self.settings.startup_s}s")
        peers_ended = any(v.gone for v in self.views.values())
        silent = {r: v for r, v in live.items()
                  if now - v.seen_at > (min(limit, silence({"period": v.period})) if peers_ended else limit)}
        if silent:
            quiet = min(now - v.seen_at for v in silent.values())
            hosts = sorted({v.host for v in silent.values() if v.host})
            dead = [h for h in hosts if all(r in silent for r, v in self.views.items()
                                            if v.host == h and v.gone is None)]
            step = min(v.step for v in silent.values())
            if dead:
                ranks = tuple(sorted(r for r, v in silent.items() if v.host in dead))
                return Verdict(Cause.NODE_FAIL, ranks, tuple(dead), step,
                               f"no heartbeat from {', '.join(dead)} (rank(s) {_ranks(ranks)}) for "
                               f"{quiet:.0f}s")
            ranks = tuple(sorted(silent))
            return Verdict(Cause.HANG, ranks, tuple(hosts), step,
                           f"the heartbeat of rank(s) {_ranks(ranks)} stopped for {quiet:.0f}s")
        stalled = {r: v for r, v in live.items()
                   if now - v.moved_at > (self.settings.startup_s if v.phase == "startup" else limit)}
        if not stalled:
            return None
        # The rank that holds the others up need not be the one seen still longest: look at all.
        idle = {r: v for r, v in live.items() if now - v.moved_at > limit / 2}
        culprits, why = {r: v for r, v in idle.items() if v.state == "T"}, "stopped (state T)"
        if not culprits:
            culprits, why = {r: v for r, v in idle.items() if v.phase == "data"}, "waiting for data"
        if not culprits:
            low = min(v.step for v in stalled.values())
            culprits = {r: v for r, v in stalled.items() if v.step == low}
            why = f"no progress in phase {next(iter(culprits.values())).phase}"
        ranks = tuple(sorted(culprits))
        hosts = tuple(sorted({v.host for v in culprits.values() if v.host}))
        step = min(v.step for v in culprits.values())
        where = f" on {', '.join(hosts)}" if hosts else ""
        return Verdict(Cause.HANG, ranks, hosts, step,
                       f"rank(s) {_ranks(ranks)}{where} {why} at step {step} for {limit:.0f}s")

    def snapshot(self, now: float) -> dict:
        """What observed.json holds: per rank, seconds since its heartbeat changed, and the bound."""
        return {"bound_s": self.bound(), "ranks": {str(r): {"silent_s": round(now - v.seen_at, 1),
                                                             "idle_s": round(now - v.moved_at, 1),
                                                             "step": v.step, "host": v.host, "gone": v.gone}
                                                   for r, v in sorted(self.views.items())}}


def _ranks(ranks) -> str:
    return ", ".join(str(r) for r in ranks)


class _Stop(Exception):
    pass


def _alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def confirmed(verdict: Verdict, probe: str | None, bound_s: float) -> Verdict:
    """A node_fail verdict whose hosts still answer is a hang of ranks whose heartbeat stopped."""
    if verdict.cause is not Cause.NODE_FAIL:
        return verdict
    alive = answering(verdict.hosts, probe, probe_timeout(bound_s))
    if not alive:
        return verdict
    return Verdict(Cause.HANG, verdict.ranks, verdict.hosts, verdict.step,
                   f"{verdict.detail}, but {', '.join(sorted(alive))} answers")


def watch(paths: AttemptPaths, ranks: int, settings: FaultSettings, shell_pid: int, launcher_pid: int,
          poll_s: float | None = None, probe: str | None = None) -> int:
    """Watch until a verdict (written, shell signalled), SIGTERM, or the launcher or the batch
    shell is gone; then observed.json.  Exit 0."""
    def stop(signum, frame):
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    poll = poll_s if poll_s is not None else min(5.0, max(0.5, settings.bound_s / 20))
    obs = Observer(ranks, settings, time.monotonic())
    try:
        while True:
            now = time.monotonic()
            ended = set(by_rank(paths.dir, "rank"))
            obs.update(by_rank(paths.dir, "heartbeat"), ended, now)
            if len(ended) >= ranks or not (_alive(launcher_pid) and _alive(shell_pid)):
                break
            verdict = obs.judge(now)
            if verdict is not None:
                verdict = confirmed(verdict, probe, obs.bound())
                write_json(paths.watchdog, {**verdict.to_dict(), "time": time.time(), "bound_s": obs.bound()})
                write_json(paths.observed, obs.snapshot(now))
                os.kill(shell_pid, signal.SIGUSR1)
                return 0
            time.sleep(poll)
    except _Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if read_json(paths.watchdog) is None:
        write_json(paths.observed, obs.snapshot(time.monotonic()))
    return 0
