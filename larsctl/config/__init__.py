"""What the user writes: cluster profiles and job recipes (YAML, validated by pydantic)."""
