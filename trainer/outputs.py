"""Where a run writes, relative to its out dir (--out-dir; a larsctl job directory).

larsctl's JobPaths reads the same names, so report, tensorboard and resume find a
run's files wherever the trainer put them.
"""
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = "checkpoint-{step:08d}.pt"
METRICS_FILE = "metrics.jsonl"
RANK_LOG = "logs/ranks/rank.{rank}.log"  # every rank's own stdout+stderr (trainer/ranklog.py)
