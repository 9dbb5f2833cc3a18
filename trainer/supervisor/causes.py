"""The causes a segment can end with, what each means, and the policy for each: the one table.

The profile's ``faults:`` section, ``larsctl submit --on-fault CAUSE=ACTION``, the batch
script's decision (trainer.supervisor.policy), ``larsctl status`` and the README's "When
things go wrong" all read :data:`TABLE` and :class:`FaultSettings`; nothing else lists
causes or their defaults.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Mapping


class Cause(str, enum.Enum):
    COMPLETED = "completed"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    NODE_FAIL = "node_fail"
    HANG = "hang"
    DIVERGED = "diverged"
    OOM = "oom"
    CRASH = "crash"
    BAD_INPUT = "bad_input"
    WALLTIME = "walltime"
    UNKNOWN = "unknown"


class Action(str, enum.Enum):
    RESUME = "resume"  # requeue / resubmit; the trainer continues from its newest good checkpoint
    STOP = "stop"      # the job ends with this segment


@dataclass(frozen=True)
class CauseInfo:
    meaning: str        # one line: what happened
    default: Action     # what the job does next unless the profile or submit says otherwise
    fixed: bool = False  # the action cannot be changed (nothing else makes sense)
    limited: bool = False  # resumes count against FaultSettings.crash_resumes


TABLE: dict[Cause, CauseInfo] = {
    Cause.COMPLETED: CauseInfo("the trainer reached its last step (or its validation target)", Action.STOP,
                               fixed=True),
    Cause.PREEMPTED: CauseInfo("stopped by USR2 before the time limit, or by preemption; checkpoint written",
                               Action.RESUME),
    Cause.CANCELLED: CauseInfo("cancelled (larsctl cancel, scancel, qdel); the trainer checkpointed and stopped",
                               Action.STOP, fixed=True),
    Cause.NODE_FAIL: CauseInfo("a node stopped answering (power, kernel panic, network): the heartbeats of its "
                               "ranks ended", Action.RESUME),
    Cause.HANG: CauseInfo("a rank made no progress within the bound (a stopped process, a blocked read, a "
                          "device that stopped answering); the watchdog ended the ranks", Action.RESUME),
    Cause.DIVERGED: CauseInfo("the loss or the weights became non-finite; the trainer stopped before it wrote "
                              "a checkpoint of them", Action.STOP),
    Cause.OOM: CauseInfo("out of memory (the device, or the host's OOM killer)", Action.RESUME, limited=True),
    Cause.CRASH: CauseInfo("a rank failed: an exception, or killed by a signal", Action.RESUME, limited=True),
    Cause.BAD_INPUT: CauseInfo("the job's input is wrong (the trainer exited 2 naming it); fix it, then resume",
                               Action.STOP, fixed=True),
    Cause.WALLTIME: CauseInfo("killed at the time limit before a checkpoint could be written", Action.RESUME),
    Cause.UNKNOWN: CauseInfo("the segment ended without a record saying why (the detail says what is known)",
                             Action.RESUME, limited=True),
}
assert set(TABLE) == set(Cause)

# What a scheduler's own record of a run says of its cause: read only for a segment whose
# batch shell could not record its end (it died with its node, or was killed).
SLURM_END_CAUSES: dict[str, Cause] = {  # sacct/squeue State, first word
    "COMPLETED": Cause.COMPLETED, "CANCELLED": Cause.CANCELLED, "REVOKED": Cause.CANCELLED,
    "NODE_FAIL": Cause.NODE_FAIL, "BOOT_FAIL": Cause.NODE_FAIL, "TIMEOUT": Cause.WALLTIME,
    "DEADLINE": Cause.WALLTIME, "OUT_OF_MEMORY": Cause.OOM, "PREEMPTED": Cause.PREEMPTED,
    "FAILED": Cause.CRASH, "SPECIAL_EXIT": Cause.CRASH,
}
PBS_EXIT_CAUSES: dict[int, Cause] = {  # PBS Pro/OpenPBS Exit_status (src/include/job.h; 256+signal)
    0: Cause.COMPLETED, -29: Cause.WALLTIME, -27: Cause.OOM, -20: Cause.NODE_FAIL,
    256 + 15: Cause.CANCELLED, 128 + 15: Cause.CANCELLED, 256 + 9: Cause.CRASH, 128 + 9: Cause.CRASH,
}

# Bounds (seconds).  The watchdog ends a segment when a rank made no progress for half the
# bound, so that the whole reaction (notice, end the ranks, release the allocation) fits in
# it; the bound grows to BOUND_STEPS median step times for slow steps.
DEFAULT_BOUND_S = 180
BOUND_STEPS = 10
DEFAULT_STARTUP_S = 900  # from launch to a rank's first step (data scan, model build, resume)
DEFAULT_CRASH_RESUMES = 2


class SettingsError(ValueError):
    """A ``faults:`` value that is not allowed; the message names the field."""


@dataclass(frozen=True)
class FaultSettings:
    """What a job does about faults: bounds, and the action per cause.

    bound_s      the hang/node-failure bound: at least this, or BOUND_STEPS median step times
    startup_s    a rank may take this long from launch to its first step
    crash_resumes how many times crash/oom/unknown segments are resumed (a crash loop, two
                 segments in a row ending at the same step with the same error, stops at once)
    policy       cause -> action, for the causes whose action is not fixed
    shrink_after_s  after a node_fail, a job that has waited this long for the node goes on on
                 the nodes left, re-planned keeping its effective batch (None: it waits)
    grow_back    a shrunk job goes back to its first shape at its next segment when the
                 scheduler has that many nodes idle
    """

    bound_s: int = DEFAULT_BOUND_S
    startup_s: int = DEFAULT_STARTUP_S
    crash_resumes: int = DEFAULT_CRASH_RESUMES
    policy: Mapping[Cause, Action] = field(default_factory=lambda: {c: i.default for c, i in TABLE.items()})
    shrink_after_s: int | None = None
    grow_back: bool = False

    def action(self, cause: Cause) -> Action:
        return TABLE[cause].default if TABLE[cause].fixed else self.policy.get(cause, TABLE[cause].default)

    def collective_timeout_s(self) -> int:
        """Engines' collective and rendezvous timeouts: a backstop behind the watchdog (half the
        bound) and the heartbeat's dead-man switch (twice it), long enough for start-up."""
        return max(2 * self.bound_s, self.startup_s)

    def with_overrides(self, values: Mapping[str, Any], where: str = "faults") -> "FaultSettings":
        """These settings with ``values`` (the ``faults:`` mapping of a profile or a submit) applied."""
        out = self
        for key, value in values.items():
            if key in ("bound_s", "startup_s"):
                out = replace(out, **{key: _seconds(value, f"{where}.{key}", minimum=1)})
            elif key == "crash_resumes":
                out = replace(out, crash_resumes=_seconds(value, f"{where}.{key}", minimum=0))
            elif key == "shrink_after_s":
                out = replace(out, shrink_after_s=None if value is None else _seconds(value, f"{where}.{key}", 0))
            elif key == "grow_back":
                if not isinstance(value, bool):
                    raise SettingsError(f"{where}.grow_back: expected true or false, got {value!r}")
                out = replace(out, grow_back=value)
            elif key == "policy":
                if not isinstance(value, Mapping):
                    raise SettingsError(f"{where}.policy: expected a mapping of cause: resume|stop")
                policy = dict(out.policy)
                for cause, action in value.items():
                    c, a = parse_rule(f"{cause}={action}", f"{where}.policy")
                    policy[c] = a
                out = replace(out, policy=policy)
            else:
                raise SettingsError(f"{where}: unknown field {key!r} (expected bound_s, startup_s, "
                                    "crash_resumes, policy, shrink_after_s, grow_back)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"bound_s": self.bound_s, "startup_s": self.startup_s, "crash_resumes": self.crash_resumes,
                "policy": {c.value: self.action(c).value for c in Cause if not TABLE[c].fixed},
                "shrink_after_s": self.shrink_after_s, "grow_back": self.grow_back}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "faults") -> "FaultSettings":
        return cls().with_overrides(data or {}, where)


def parse_rule(text: str, where: str = "--on-fault") -> tuple[Cause, Action]:
    """``CAUSE=ACTION`` -> (Cause, Action); SettingsError names what was expected."""
    cause, sep, action = str(text).partition("=")
    try:
        c = Cause(cause.strip())
    except ValueError:
        choices = ", ".join(x.value for x in Cause if not TABLE[x].fixed)
        raise SettingsError(f"{where}: {cause.strip()!r} is not a cause (expected one of {choices})") from None
    try:
        a = Action(action.strip())
    except ValueError:
        raise SettingsError(f"{where}: {c.value}: expected resume or stop, got {action.strip()!r}") from None
    if not sep:
        raise SettingsError(f"{where}: expected CAUSE=ACTION, got {text!r}")
    if TABLE[c].fixed and a is not TABLE[c].default:
        raise SettingsError(f"{where}: {c.value} always means {TABLE[c].default.value} "
                            f"({TABLE[c].meaning})")
    return c, a


def _seconds(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingsError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value
