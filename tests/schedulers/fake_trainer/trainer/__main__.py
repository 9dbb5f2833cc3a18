"""A stand-in for `python -m trainer` in scheduler tests (put fake_trainer/ on PYTHONPATH).

It accepts the real command line (--config, --out-dir), appends what it saw to
<out-dir>/rank<R>.txt and mimics the real trainer's contract: on SIGUSR2 or SIGTERM
it exits 75 (REQUEUE).  FAKE_SECONDS: how long the first run "trains" (default 1; restarted runs take 1 s).
FAKE_MODE=requeue-once: exit 75 on the first run (SLURM_RESTART_COUNT/LARSCTL_RESTARTS
unset or 0) without a signal; FAKE_MODE=fail: exit 3.
"""
import os
import signal
import sys
import time

args = sys.argv[1:]
out = args[args.index("--out-dir") + 1]
rank = next((os.environ[k] for k in ("OMPI_COMM_WORLD_RANK", "HOROVOD_RANK", "PMIX_RANK", "PMI_RANK",
                                     "RANK", "SLURM_PROCID") if k in os.environ), "0")
restart = os.environ.get("SLURM_RESTART_COUNT") or os.environ.get("LARSCTL_RESTARTS") or "0"
got = []
for sig in (signal.SIGUSR2, signal.SIGTERM):
    signal.signal(sig, lambda s, f: got.append(s))


def note(text):
    with open(os.path.join(out, f"rank{rank}.txt"), "a") as f:
        f.write(text + "\n")


note(f"start restart={restart} config={args[args.index('--config') + 1]}")
# A restarted run finishes quickly: the first run is the one tests interrupt.
end = time.time() + (float(os.environ.get("FAKE_SECONDS", "1")) if restart == "0" else 1.0)
while time.time() < end and not got:
    time.sleep(0.05)
mode = os.environ.get("FAKE_MODE", "ok")
if got:
    note(f"signal {signal.Signals(got[0]).name}")
    sys.exit(75)
if mode == "requeue-once" and restart == "0":
    note("requeue")
    sys.exit(75)
if mode == "fail":
    sys.exit(3)
note("done")
