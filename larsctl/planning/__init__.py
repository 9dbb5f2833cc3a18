"""Profile + recipe -> plan -> job spec: hardware facts, the planner, the time estimate (pure)."""
