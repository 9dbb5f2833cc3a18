"""Watching jobs (status --watch, submit --follow, logs --follow) reads metrics.jsonl every
second but asks the scheduler less and less often while nothing changes (2 s rising to
60 s, like submitit's InfoWatcher), and again soon after a change.

A real local job directory whose segment is a live process; a spy on the real
LocalScheduler counts the scheduler queries; the clock and sleep are the test's, so
minutes of watching take no time.
"""
from __future__ import annotations

import json
import subprocess
import time

from larsctl.jobs import lifecycle
from larsctl.facts.jobdir import JobPaths
from larsctl.jobs.registry import Registry
from larsctl.facts.states import JobState
from larsctl.schedulers.local import LocalScheduler, make_id, proc_starttime


def test_scheduler_polls_back_off_while_metrics_are_read_every_second(tmp_path, monkeypatch):
    paths = JobPaths(tmp_path / "runs" / "watched-1")
    paths.state.mkdir(parents=True)
    paths.metrics.write_text("")
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        paths.segment_pid(0).write_text(f"{sleeper.pid} {proc_starttime(sleeper.pid)}\n")
        paths.segment_started(0).touch()
        registry = Registry()
        record = registry.claim_id("watched", cluster="local", scheduler="local", job_dir=str(paths.root),
                                   state=JobState.PENDING)
        registry.update(record.id, scheduler_ids=[make_id(paths.root, 0)])

        asked: list[float] = []
        now = [0.0]
        describe = LocalScheduler.describe

        def spy(self, ids):
            asked.append(now[0])
            return describe(self, ids)

        def sleep(seconds):
            now[0] += seconds

        monkeypatch.setattr(LocalScheduler, "describe", spy)
        steps_seen = []
        for i, (rows, _) in enumerate(lifecycle.watch(registry, [record.id], sleep=sleep, clock=lambda: now[0])):
            steps_seen.append(rows[0].progress.step)
            with paths.metrics.open("a") as fh:  # the trainer writes a line every second
                fh.write(json.dumps({"kind": "train", "time": time.time(), "step": i + 1, "total_steps": 1000,
                                     "epoch": 0.0, "loss": 1.0}) + "\n")
            if now[0] >= 300:
                break
        assert rows[0].state is JobState.RUNNING
        assert steps_seen[1:] == list(range(1, len(steps_seen)))  # progress every second
        gaps = [b - a for a, b in zip(asked, asked[1:])]
        assert gaps[0] <= 3 and max(gaps) >= 55 and max(gaps) <= 61, gaps
        assert len(asked) <= 15, asked  # a fixed 2 s poll would ask 150 times
    finally:
        sleeper.kill()
        sleeper.wait()
