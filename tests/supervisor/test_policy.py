"""What a job does after a segment (trainer.supervisor.policy) and the fault settings it follows
(trainer.supervisor.causes), table by table."""
from __future__ import annotations

import pytest

from trainer.supervisor.causes import TABLE, Action, Cause, FaultSettings, SettingsError, parse_rule
from trainer.supervisor.classify import Ending
from trainer.supervisor.policy import decide

DEFAULT = FaultSettings()


def end(cause: Cause, step=10, error=None) -> Ending:
    return Ending(cause, "detail", step=step, error=error)


def seen(cause: Cause, step=10, error=None, action="resume") -> dict:
    return {"cause": cause.value, "step": step, "error": error, "action": action}


@pytest.mark.parametrize("cause, action", [(c, i.default) for c, i in TABLE.items()])
def test_each_cause_has_its_default_action(cause, action):
    assert decide(end(cause), [], DEFAULT, restarts=0, max_restarts=3).action is action


def test_a_crash_loop_stops_at_once():
    history = [seen(Cause.CRASH, 20, "OSError: disk")]
    d = decide(end(Cause.CRASH, 20, "OSError: disk"), history, DEFAULT, 1, 9)
    assert d.action is Action.STOP and d.reason.startswith("crash loop: two segments in a row ended with crash")
    # Another step, or another error: not a loop.
    assert decide(end(Cause.CRASH, 30, "OSError: disk"), history, DEFAULT, 1, 9).action is Action.RESUME
    assert decide(end(Cause.CRASH, 20, "ValueError"), history, DEFAULT, 1, 9).action is Action.RESUME


def test_crash_resumes_are_limited_and_other_causes_do_not_count():
    history = [seen(Cause.CRASH, 5), seen(Cause.PREEMPTED, 9), seen(Cause.OOM, 12)]
    d = decide(end(Cause.CRASH, 40), history, DEFAULT, 3, 9)
    assert d.action is Action.STOP and d.reason == "crash: 2 of 2 resumes after crashes used"
    assert decide(end(Cause.PREEMPTED, 40), history, DEFAULT, 3, 9).action is Action.RESUME


def test_no_restarts_left_stops_any_cause():
    d = decide(end(Cause.NODE_FAIL), [], DEFAULT, restarts=3, max_restarts=3)
    assert d.action is Action.STOP and d.reason == "node_fail: no restarts left (3 of 3 used)"


def test_a_policy_changes_what_may_change():
    settings = DEFAULT.with_overrides({"policy": {"hang": "stop", "diverged": "resume"}, "crash_resumes": 0})
    assert decide(end(Cause.HANG), [], settings, 0, 3).reason == "hang: stop (by the job's policy)"
    assert decide(end(Cause.DIVERGED), [], settings, 0, 3).action is Action.RESUME
    assert decide(end(Cause.CRASH), [], settings, 0, 3).action is Action.STOP


@pytest.mark.parametrize("values, message", [
    ({"policy": {"cancelled": "resume"}}, "faults.policy: cancelled always means stop"),
    ({"policy": {"hung": "stop"}}, "faults.policy: 'hung' is not a cause (expected one of preempted, node_fail"),
    ({"policy": {"hang": "retry"}}, "faults.policy: hang: expected resume or stop, got 'retry'"),
    ({"bound_s": 0}, "faults.bound_s: expected an integer >= 1, got 0"),
    ({"crash_resumes": -1}, "faults.crash_resumes: expected an integer >= 0, got -1"),
    ({"on": {}}, "faults: unknown field 'on' (expected bound_s, startup_s, crash_resumes, policy, shrink_after_s"),
    ({"grow_back": "yes"}, "faults.grow_back: expected true or false, got 'yes'"),
])
def test_bad_settings_name_the_field_and_what_was_expected(values, message):
    with pytest.raises(SettingsError) as info:
        FaultSettings.from_dict(values)
    assert str(info.value).startswith(message), str(info.value)


def test_settings_round_trip_and_derive_the_timeouts():
    s = FaultSettings.from_dict({"bound_s": 600, "startup_s": 100, "policy": {"oom": "stop"}, "shrink_after_s": 300,
                                 "grow_back": True})
    assert FaultSettings.from_dict(s.to_dict()) == s
    assert s.collective_timeout_s() == 1200  # twice the bound, at least the start-up
    assert parse_rule("node_fail=stop") == (Cause.NODE_FAIL, Action.STOP)


def test_the_readme_lists_every_cause_with_its_default():
    """README's "When things go wrong" table says what trainer.supervisor.causes.TABLE does."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (resume|stop)[^|]* \|", text, re.M))
    assert rows == {c.value: i.default.value for c, i in TABLE.items()}
