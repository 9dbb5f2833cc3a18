"""A chaos campaign on the 3-node test cluster: one digits job of at least 300 steps meets mixed
faults at random steps, and must COMPLETE with the weights of a run that never stopped.

Seeded: the seed picks the order of the faults, the steps they come at and the node or rank
each hits.  Every kind comes at least once:

  node      a node killed as a whole (its namespace init: everything on it dies at once, as in a
            power loss); brought back once the segment has ended as node_fail
  kill      SIGKILL of one rank
  hang      SIGSTOP of one rank (the watchdog ends the segment as hang)
  preempt   USR2 to the batch shell (what Slurm sends before the time limit)
  truncate  the newest checkpoint cut in half, then SIGKILL of a rank: the resume must skip it
  ctld      slurmctld stopped for 20 s and started again (the job trains on meanwhile)

Both runs (the uninterrupted reference first, then the campaign) use the same shape, the
`deterministic` trainer option and the job's own policy (bound 30 s); the campaign's job may
restart 30 times.  Printed per fault: its step, what it hit, the cause the segment recorded,
the steps lost (trained after the checkpoint the job went on from) and the seconds from the
fault to training again (the job past the step it resumed from); then whether the final
weights are bit-identical to the reference's.  Needs root (network, mount and PID namespaces)
and about 20 minutes on 2 cores.

    .venv/bin/python bench/bench_chaos.py --seed 7
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from machine import describe  # bench/machine.py (scripts run from bench/)

REPO = Path(__file__).resolve().parents[1]
KINDS = ("node", "kill", "hang", "preempt", "truncate", "ctld")
SHAPE = ["--recipe", str(REPO / "jobs" / "demo.yaml"), "--target-batch", "24", "--per-gpu-batch", "8", "--gpus", "3",
         "--set", "image_size=16", "--set", "log_every_steps=1", "--set", "deterministic=true"]


def load_cluster_module():
    spec = importlib.util.spec_from_file_location("larsctl_vc", REPO / "tests" / "multinode" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Campaign:
    def __init__(self, vc, vc_mod, work: Path, args):
        self.vc, self.vc_mod, self.args = vc, vc_mod, args
        self.env = {**os.environ, **vc.env(), "LARSCTL_HOME": str(work / "home"),
                    "LARSCTL_CONFIG_DIR": str(work / "config"), "OMP_NUM_THREADS": "1"}
        profile = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
        profile.update(name="chaos", scheduler="slurm", nodes=3, gpus_per_node=1, cpus_per_node=vc.cpus_per_node,
                       partition=vc_mod.PARTITION, walltime="02:00:00", signal_margin=60, network_interface="eth0",
                       venv=str(REPO / ".venv"), workdir=str(work / "runs"), mpi=args.mpi, engine=args.engine,
                       faults={"bound_s": args.bound, "crash_resumes": 30},
                       # the whole profile walltime: no run of the campaign may meet its time limit
                       walltime_margin={"factor": 100, "minimum": 7200})
        (work / "config" / "clusters").mkdir(parents=True)
        (work / "config" / "clusters" / "chaos.yaml").write_text(yaml.safe_dump(profile))

    def larsctl(self, *argv, check=True, timeout=180) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "larsctl", *argv], env=self.env, capture_output=True, text=True,
                           timeout=timeout, cwd=REPO)
        if check and r.returncode:
            raise RuntimeError(f"larsctl {' '.join(argv)}: {r.stderr.strip()}")
        return r

    def status(self, job: str) -> dict:
        return json.loads(self.larsctl("status", job, "--json", check=False).stdout)[0]

    def submit(self, *extra) -> str:
        return self.larsctl("submit", "--cluster", "chaos", *SHAPE, "--max-steps", str(self.args.steps),
                            "--set", f"checkpoint_every_steps={self.args.every}", *extra).stdout.strip()

    def release(self, row: dict) -> None:
        """A requeued job that Slurm holds back (BeginTime) is let go once the credential expired."""
        if row["state"] in ("PENDING", "REQUEUED") and row["restarts"] and row["scheduler_ids"]:
            time.sleep(self.vc_mod.CRED_EXPIRE + 1)
            self.vc.client("scontrol", "update", f"JobId={row['scheduler_ids'][-1]}", "StartTime=now", check=False)

    def wait(self, job: str, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.status(job)
            if predicate(row):
                return row
            if row["state"] in ("FAILED", "CANCELLED"):
                raise RuntimeError(f"{job} ended {row['state']} waiting for {what}: {row['segments'][-1:]}")
            self.release(row)
            time.sleep(1)
        raise RuntimeError(f"{job}: no {what} within {timeout:.0f}s")

    # -- the faults ---------------------------------------------------------------------------
    def rank(self, job_dir: str, rnd: random.Random) -> tuple[int, dict]:
        from trainer.supervisor.records import current_attempt, read_json

        attempt = current_attempt(job_dir)
        beats = {r: read_json(attempt.heartbeat(r)) for r in range(3)}
        r = rnd.choice([r for r, hb in beats.items() if hb and not hb.get("gone")])
        return r, beats[r]

    def inject(self, kind: str, job: str, row: dict, rnd: random.Random) -> str:
        vc = self.vc
        if kind == "node":
            node = rnd.choice(vc.nodes)
            vc.kill_node(node)
            return node
        if kind == "preempt":
            vc.client("scancel", "--signal=USR2", "--batch", row["scheduler_ids"][-1])
            return "batch shell"
        if kind == "ctld":
            vc.stop_controller()
            time.sleep(20)
            vc.start_controller()
            return "slurmctld"
        if kind == "truncate":
            newest = max(Path(row["job_dir"], "checkpoints").glob("*.pt"), key=lambda p: p.stat().st_mtime_ns)
            with open(newest, "r+b") as fh:
                fh.truncate(newest.stat().st_size // 2)
        r, hb = self.rank(row["job_dir"], rnd)
        vc.run(hb["host"], "kill", "-STOP" if kind == "hang" else "-KILL", str(hb["pid"]), check=False, cwd="/")
        return f"rank {r} on {hb['host']}" + (f", {newest.name} truncated" if kind == "truncate" else "")

    def run_fault(self, kind: str, at: int, job: str, rnd: random.Random) -> dict:
        row = self.wait(job, lambda r: r["state"] == "RUNNING" and (r["progress"]["step"] or 0) >= at, 900,
                        f"step {at}")
        ended_before = len([s for s in row["segments"] if s["cause"]])
        start = time.monotonic()
        hit = self.inject(kind, job, row, rnd)
        if kind == "ctld":
            again = time.monotonic() - start
            return {"kind": kind, "step": row["progress"]["step"], "hit": hit, "cause": "-", "lost": 0,
                    "seconds": round(again, 1), "note": "training went on; status answered again"}
        row = self.wait(job, lambda r: len([s for s in r["segments"] if s["cause"]]) > ended_before, 600,
                        f"the end of the segment after {kind}")
        seg = [s for s in row["segments"] if s["cause"]][ended_before]
        if kind == "node":
            self.vc.start_node(hit)
        resumed = self.wait(job, lambda r: len(r["segments"]) > seg["number"] + 1 and r["segments"][-1]["first_step"]
                            is not None and (r["progress"]["step"] or 0) > r["segments"][-1]["first_step"], 900,
                            "training again")
        nxt = resumed["segments"][seg["number"] + 1]
        return {"kind": kind, "step": row["progress"]["step"], "hit": hit, "cause": seg["cause"],
                "lost": max(0, (seg["last_step"] or 0) - nxt["first_step"]), "seconds": round(time.monotonic() - start, 1),
                "note": seg["detail"][:90]}


def schedule(rnd: random.Random, faults: int, steps: int) -> list[tuple[str, int]]:
    kinds = list(KINDS) + [rnd.choice(KINDS) for _ in range(max(0, faults - len(KINDS)))]
    rnd.shuffle(kinds)
    gap = (steps - 40) // len(kinds)
    return [(kind, 20 + i * gap + rnd.randrange(max(1, gap // 2))) for i, kind in enumerate(kinds)]


def final_state(job_dir: str, steps: int):
    import torch

    path = Path(job_dir, "checkpoints", f"checkpoint-{steps:08d}.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a, b) -> bool:
    import torch

    return all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]) and a["global_step"] == b["global_step"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--faults", type=int, default=6, help=f"at least {len(KINDS)}: every kind once")
    ap.add_argument("--every", type=int, default=10, help="checkpoint interval (steps)")
    ap.add_argument("--bound", type=int, default=30, help="the job's fault bound (s)")
    ap.add_argument("--mpi", default="srun-pmix")
    ap.add_argument("--engine", default="horovod")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_chaos: needs root (the 3-node test cluster runs in namespaces)", file=sys.stderr)
        return 2
    rnd = random.Random(args.seed)
    plan = schedule(rnd, max(args.faults, len(KINDS)), args.steps)
    print(describe())
    print(f"seed {args.seed}: {args.steps} steps, checkpoint every {args.every}, bound {args.bound}s, "
          f"{args.mpi}/{args.engine}; faults {plan}")
    vc_mod = load_cluster_module()
    work = Path(tempfile.mkdtemp(prefix="larsctl-chaos-", dir="/var/tmp"))
    work.chmod(0o755)  # munged (the munge user) must reach the cluster's files below it
    vc = vc_mod.VirtualCluster(work / "cluster", nodes=3, shared=[work])
    vc.start()
    try:
        c = Campaign(vc, vc_mod, work, args)
        t0 = time.monotonic()
        ref = c.submit()
        ref_row = c.wait(ref, lambda r: r["state"] == "COMPLETED", 1800, "the reference run")
        print(f"reference: {ref} COMPLETED in {time.monotonic() - t0:.0f}s")
        t0 = time.monotonic()
        job = c.submit("--max-restarts", "30")
        results = [c.run_fault(kind, at, job, rnd) for kind, at in plan]
        done = c.wait(job, lambda r: r["state"] == "COMPLETED", 1800, "COMPLETED")
        took = time.monotonic() - t0
    finally:
        vc.stop()
    print(f"\n{'fault':<9} {'step':>5}  {'hit':<32} {'cause':<10} {'lost':>4} {'to train':>9}  detail")
    for r in results:
        print(f"{r['kind']:<9} {r['step']:>5}  {r['hit']:<32} {r['cause']:<10} {r['lost']:>4} {r['seconds']:>8.1f}s  "
              f"{r['note']}")
    shapes = {s["shape_text"] for s in done["segments"]}
    identical = same_weights(final_state(done["job_dir"], args.steps), final_state(ref_row["job_dir"], args.steps))
    worst = max(r["lost"] for r in results if r["kind"] != "truncate")
    print(f"\n{job}: {done['state']} after {len(done['segments'])} segments in {took:.0f}s, restarts "
          f"{done['restarts']}; shapes {sorted(shapes)}; final weights bit-identical to the uninterrupted run: "
          f"{identical}; steps lost per fault at most {worst} (checkpoint interval {args.every}; a truncated "
          f"newest checkpoint costs one interval more)")
    return 0 if done["state"] == "COMPLETED" and identical and worst <= args.every else 1


if __name__ == "__main__":
    sys.exit(main())
