"""Idempotency keys: the first decided response per (API key, Idempotency-Key), replayed byte for byte."""
