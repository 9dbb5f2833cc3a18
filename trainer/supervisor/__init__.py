"""What happens around the training ranks of a job: why each segment ended, and what next.

A *segment* is one run of a job's batch script: the first run, every requeue, every
chain segment and every ``larsctl resume``.  Each gets a directory
``<job_dir>/attempts/<n>/`` (trainer.supervisor.records) where

* the batch script records its start and its end (``python -m trainer.supervisor
  begin`` / ``finish``),
* every rank records how it ended (trainer.supervisor.records.write_rank_end), and
  publishes its progress through a heartbeat file written by a small side process
  (trainer.supervisor.heartbeat), so nothing is added to the training step,
* a watchdog beside the launcher (``python -m trainer.supervisor watch``) notices a rank
  that stopped making progress or a node that stopped answering, and ends the ranks.

From those records, the launcher's exit code and the batch shell's signal, one cause is
derived (trainer.supervisor.classify; the causes and their policies are the table in
trainer.supervisor.causes), and the cause's policy decides whether the job resumes.
Everything here is standard library only: the batch shell runs it with the job's Python
without importing torch, and larsctl reads the same records to show them.
"""
