"""Errors of the cluster app, importable from ``cluster``."""

from __future__ import annotations


class IllegalTransition(ValueError):
    """A membership change that the node's state machine does not allow; nothing was changed."""

    def __init__(self, node: str, from_state: str, to_state: str, legal: frozenset[str]) -> None:
        self.node, self.from_state, self.to_state = node, from_state, to_state
        allowed = ", ".join(sorted(legal)) or "none"
        super().__init__(f"node {node!r} cannot go from {from_state} to {to_state} (from {from_state}: {allowed})")


class UnknownNode(LookupError):
    """No node has that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no node named {name!r}")


class JobFailed(Exception):
    """A ``cluster_task`` job ended failed: ``AsyncResult.get()`` raises it with the job's recorded error."""
