"""The bundled LARS trainer that every larsctl job runs (python -m trainer)."""
