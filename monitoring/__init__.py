"""Heartbeats, failure detection, recovery, metrics and the live dashboard."""
