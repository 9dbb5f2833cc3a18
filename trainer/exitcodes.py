"""Exit codes of `python -m trainer` (the contract batch scripts and larsctl rely on).

Launchers pass on a failed rank's code only loosely (horovodrun and torchrun say 1), so
the batch script reads each rank's own record of how it ended (trainer.supervisor) and
uses these codes only as a last resort.
"""
OK = 0
FAILURE = 1
# Bad input: one line on stderr naming the file/field/value, no traceback.
BAD_INPUT = 2
# EX_DATAERR: the loss or the weights became non-finite; stopped before writing a checkpoint.
DIVERGED = 65
# EX_TEMPFAIL: stopped on SIGUSR2 after writing a checkpoint; requeue the job.
REQUEUE = 75
# 128 + SIGTERM: cancelled (SIGTERM) after writing a checkpoint; nothing requeues it.
CANCELLED = 143
