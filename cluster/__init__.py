"""Cluster membership, the consistent-hash ring, and routed jobs.

Public entry points: ``cluster.ring.HashRing`` (pure), ``cluster.services`` (membership changes),
``cluster.selectors`` (``current_ring``, ``owner_of``, ``owners_of``).
"""

from .exceptions import IllegalTransition, JobFailed, UnknownNode

__all__ = ["IllegalTransition", "JobFailed", "UnknownNode"]
