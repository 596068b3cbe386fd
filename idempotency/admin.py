"""Django admin for the ``idempotency`` app."""

from __future__ import annotations
