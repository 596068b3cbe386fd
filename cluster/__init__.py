"""Cluster membership, the consistent-hash ring, and routed jobs."""
