"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018) on top of a HashRing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType

from .ring import HashRing, RingTypeError

__all__ = ["BoundedLoadAssigner"]


class BoundedLoadAssigner:
    """Assigns keys one by one so that no node ever holds more than its capacity.

    With m keys assigned so far (this one included), node i's capacity is ceil(c * m * w_i / W), its weighted share
    of c times the mean load. A key goes to the first node in its ring preference order (owner, then clockwise) that
    is below capacity. Capacities sum to at least c * m > m - 1, so such a node always exists, and since capacities
    only grow with m, every node's load stays <= ceil(c * m * w_i / W) at all times: max/mean <= c whenever
    c * m * w_i / W is whole, and at most one key above c times the mean otherwise. The assigner is stateful
    (not thread-safe) and keys are never released; build a new one for a new batch or a new ring.
    """

    __slots__ = ("_assigned", "_c", "_loads", "_ring", "_scales")

    def __init__(self, ring: HashRing, c: float = 1.25) -> None:
        if not isinstance(ring, HashRing):
            raise RingTypeError(f"ring must be a HashRing, not {type(ring).__name__}")
        if isinstance(c, bool) or not isinstance(c, int | float):
            raise RingTypeError(f"c must be a number, not {type(c).__name__}")
        if not math.isfinite(c) or c <= 1:
            raise ValueError(f"c must be a finite number > 1, got {c!r}")
        self._ring = ring
        self._c = float(c)
        self._assigned = 0
        self._loads = dict.fromkeys(ring.nodes, 0)
        # Capacity = ceil(m * numerator / denominator) in exact integer arithmetic, so the bound holds to the key
        # rather than to float rounding.
        total = sum(Fraction(weight) for weight in ring.weights.values())
        self._scales = {}
        for name, weight in ring.weights.items():
            scale = Fraction(self._c) * Fraction(weight) / total
            self._scales[name] = (scale.numerator, scale.denominator)

    @property
    def c(self) -> float:
        """The load factor: no node exceeds c times its weighted share of the keys (rounded up)."""
        return self._c

    @property
    def assigned(self) -> int:
        """Number of keys assigned so far."""
        return self._assigned

    @property
    def loads(self) -> Mapping[str, int]:
        """Read-only node -> number of keys assigned to it."""
        return MappingProxyType(self._loads)

    def capacity(self, name: str) -> int:
        """How many keys `name` may hold once the next key is assigned."""
        if name not in self._scales:
            raise ValueError(f"name: unknown node {name!r}")
        return self._capacity(name, self._assigned + 1)

    def assign(self, key: str | bytes) -> str:
        """Assign `key` to the first node in its preference order that is under capacity, and return that node."""
        total = self._assigned + 1
        owner = self._ring.get_node(key)
        if self._loads[owner] < self._capacity(owner, total):
            return self._place(owner)
        for node in self._ring.preference(key):
            if self._loads[node] < self._capacity(node, total):
                return self._place(node)
        raise AssertionError("unreachable: capacities always sum to more than the keys already assigned")

    def _capacity(self, name: str, total: int) -> int:
        numerator, denominator = self._scales[name]
        return -(-total * numerator // denominator)

    def _place(self, node: str) -> str:
        self._loads[node] += 1
        self._assigned += 1
        return node
