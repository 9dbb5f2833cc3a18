"""Exit codes of `python -m trainer` (the contract batch scripts and larsctl rely on)."""
OK = 0
FAILURE = 1
# Bad input: one line on stderr naming the file/field/value, no traceback.
BAD_INPUT = 2
# EX_TEMPFAIL: stopped on SIGUSR2/SIGTERM after writing a checkpoint; requeue the job.
REQUEUE = 75
