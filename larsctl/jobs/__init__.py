"""Jobs once planned: their directories, the registry of records and the lifecycle
(submit, refresh, cancel, resume) that the commands call."""
