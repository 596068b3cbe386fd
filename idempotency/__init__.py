"""Idempotency records: the Idempotency-Key header and exactly-once functions and tasks."""
