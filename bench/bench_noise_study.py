"""The batch-size study on the bundled digits data: fitted critical batch vs noise-scale prediction.

One larsctl sweep, grown until each batch's best LR is inside its grid, and its report, with
the protocol and the criterion fixed here before any result was looked at (a miss is a
finding; nothing is tuned on the sweep):

- recipe jobs/digits-sweep.yaml: smallcnn with GroupNorm at 8 px on the digits set (1,437
  training scans, 360 validation), 2 CPU workers (the local profile), LR warmup 1 epoch,
  polynomial decay over 300 epochs (nearly constant over the steps a point needs);
- effective batches 4, 8, ..., 1024 (powers of two); LARS and SGD with momentum 0.9;
- a half-decade LR grid per batch and optimizer: 10^-0.5, 1 and 10^0.5 times the rule's LR
  (LARS: LEGW, lr = 4 sqrt(B/512); SGD: linear, lr = 0.1 B/256); 3 seeds per point;
- grids that find the optimum (second run, issue 21): once a batch's runs have ended, when its
  best LR is the smallest or largest of its grid, `larsctl sweep resume --wait` adds the points
  one half-decade beyond that edge, at most 2 steps on each side (--lr-extend 2); a batch whose
  best is still at an edge is marked in the report;
- target: validation top-1 >= 0.8, evaluated every 128 training examples, but never so often
  that evaluating costs more than 25% of a point's training (the planner's estimate); a point
  that has not reached it after 4,000 steps counts as not reached;
- steps-to-target per batch: median over seeds, best over the LR grid; fit
  S = S_min (1 + B_crit/B) with a bootstrap over seeds (larsctl/results/scaling.py);
- prediction: each job's noise scale averaged over training progress (larsctl/results/noise.py),
  for LARS the trust-ratio-preconditioned one (docs/lars-noise-scale.md), for SGD the plain
  B_simple; jobs that measured fewer than 100 steps are left out; the median over each
  optimizer's runs, reported as measured.

Criterion (written before the run): the prediction is within a factor of 2 of the fitted
B_crit (0.5 <= fitted / predicted <= 2) for both SGD and LARS.  The first run (2026-12-02, fixed
grid, plain B_simple for both) missed it for LARS (5.43) and passed for SGD (1.59).

    .venv/bin/python bench/bench_noise_study.py                       # submit, grow, wait, report
    .venv/bin/python bench/bench_noise_study.py --report SWEEP_ID     # report a finished sweep

The raw data goes with the figures: --archive writes each job's job.yaml, job.json and
metrics.jsonl and the sweep's sweep.json (no checkpoints) to one .tar.xz.  To recompute the
report from it elsewhere (the paths in it are relative to the workdir; larsctl re-reads them
from where they are unpacked):

    mkdir -p /tmp/study && tar -xJf bench/noise-study-data.tar.xz -C /tmp/study
    export LARSCTL_HOME=/tmp/study-home
    .venv/bin/python -m larsctl jobs --rebuild /tmp/study/sweeps/SWEEP_ID
    .venv/bin/python bench/bench_noise_study.py --report SWEEP_ID --out /tmp/study.png
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from machine import describe as describe_machine  # bench/machine.py (scripts run from bench/)

REPO = Path(__file__).resolve().parents[1]
LARSCTL = [sys.executable, "-m", "larsctl"]
SWEEP = ["sweep", "--cluster", "local", "--recipe", str(REPO / "jobs" / "digits-sweep.yaml"),
         "--batches", "4,8,16,32,64,128,256,512,1024", "--optimizers", "lars,sgd",
         "--lr-rule", "lars=legw,sgd=linear", "--lr-factors", "0.316227766,1,3.16227766",
         "--seeds", "3", "--target", "val/accuracy>=0.8", "--eval-examples", "128", "--max-steps", "4000",
         "--lr-extend", "2"]
WITHIN = 2.0  # the criterion: fitted / predicted in [1/WITHIN, WITHIN] for every optimizer


def larsctl(*args: str) -> str:
    return subprocess.run([*LARSCTL, *args], check=True, capture_output=True, text=True, cwd=REPO).stdout


def archive(sweep_id: str, dest: Path) -> None:
    """The sweep's raw data as one .tar.xz, paths relative to the workdir (written, then renamed)."""
    rows = json.loads(larsctl("jobs", "--sweep", sweep_id, "--json"))
    dirs = [Path(r["job_dir"]) for r in rows]
    workdir = dirs[0].parent
    files = [workdir / "sweeps" / sweep_id / "sweep.json"]
    files += [d / name for d in dirs for name in ("job.yaml", "job.json", "metrics.jsonl") if (d / name).is_file()]
    partial = dest.with_name(dest.name + ".partial")
    with tarfile.open(partial, "w:xz") as tar:
        for path in files:
            tar.add(path, arcname=str(path.relative_to(workdir)))
    partial.replace(dest)
    print(f"wrote {dest} ({len(rows)} jobs, {dest.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", metavar="SWEEP", help="Report this sweep instead of submitting a new one.")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "noise-study.png", help="The figure.")
    parser.add_argument("--archive", type=Path, metavar="TAR_XZ",
                        help="Also write the sweep's raw data (job.yaml, job.json, metrics.jsonl, sweep.json).")
    args = parser.parse_args()
    print(f"date: {datetime.date.today()}\nmachine: {describe_machine()}")
    start = time.monotonic()
    sweep_id = args.report
    if sweep_id is None:
        print("command: larsctl " + " ".join(SWEEP), flush=True)
        sweep_id = larsctl(*SWEEP).strip()
        print(f"sweep: {sweep_id}", flush=True)
        # Completes the sweep, waits for its jobs, grows every grid whose best LR is at an edge, until none is.
        larsctl("sweep", "resume", sweep_id, "--wait", "--poll", "60")
        rows = json.loads(larsctl("jobs", "--sweep", sweep_id, "--json"))
        print(f"all {len(rows)} jobs finished in {time.monotonic() - start:.0f} s; failed: "
              f"{[r['id'] for r in rows if r['state'] != 'COMPLETED']}")
    print(larsctl("sweep", "report", sweep_id, "--out", str(args.out)))
    if args.archive:
        archive(sweep_id, args.archive)
    report = json.loads(larsctl("sweep", "report", sweep_id, "--json"))
    verdicts = []
    for opt in report["optimizers"]:
        fit, predicted = opt.get("fit"), opt.get("predicted_b_noise")
        edges = [b["effective_batch"] for b in opt["batches"] if b.get("edge")]
        if not (fit and predicted):
            verdicts.append(False)
            print(f"{opt['optimizer']}: no {'fit' if not fit else 'prediction'}: MISS")
            continue
        ratio = fit["b_crit"] / predicted
        verdicts.append(1 / WITHIN <= ratio <= WITHIN)
        print(f"{opt['optimizer']}: fitted B_crit {fit['b_crit']:.1f} (95% {fit.get('b_crit_interval')}), "
              f"predicted {predicted:.1f}, ratio fitted/predicted {ratio:.2f}: "
              f"{'PASS' if verdicts[-1] else 'MISS'} (within {WITHIN:g}x); batches with the best LR still at "
              f"an edge: {edges or 'none'}")
    print(f"criterion (prediction within {WITHIN:g}x of the fitted B_crit for every optimizer): "
          f"{'PASS' if all(verdicts) else 'MISS'}")


if __name__ == "__main__":
    main()
