"""The names of the planner's rules and what a plan may override, and the walltime margin's
defaults: facts the profile and recipe schemas, the planner and the CLI all spell."""
from __future__ import annotations

LR_RULES = ("legw", "sqrt", "linear")
OVERRIDABLE = ("base_lr", "warmup_epochs", "epsilon")

# A job asks for max(estimate x factor, estimate + minimum) (larsctl.planning.walltime).
DEFAULT_WALLTIME_FACTOR = 1.5
DEFAULT_WALLTIME_MINIMUM_S = 600
