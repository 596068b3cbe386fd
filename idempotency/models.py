"""Models of the ``idempotency`` app."""

from __future__ import annotations
