"""``python -m trainer.tracking sync JOB_DIR...``: send what a job's tracker run does not have yet.

For a job whose last segment ended while its tracker was down (or its disk full): the
metrics after what the run durably has, every segment's shape and cause, and the final
checkpoint's manifest.  Exit 0 when every job's run has it all, 1 when a tracker failed,
2 on bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.tracking",
                                     description="Send what a job's tracker run does not have yet.")
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="send the metrics, segment tags and manifest the run lacks")
    sync.add_argument("job_dirs", nargs="+", metavar="JOB_DIR", type=Path)
    args = parser.parse_args(argv)
    from trainer.tracking import TrackingError
    from trainer.tracking.runs import sync as sync_job

    ok = True
    for job_dir in args.job_dirs:
        if not (job_dir / "job.yaml").is_file():
            print(f"python -m trainer.tracking: {job_dir}: not a job directory (no job.yaml)", file=sys.stderr)
            return 2
        try:
            ok = sync_job(job_dir, say=lambda text: print(text, file=sys.stderr, flush=True)) and ok
        except TrackingError as exc:
            print(f"python -m trainer.tracking: {exc}", file=sys.stderr)
            return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
