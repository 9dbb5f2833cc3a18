"""What jobs produced: metrics.jsonl, TensorBoard curves, final numbers, tables and figures."""
