"""Django admin for the ``locks`` app."""

from __future__ import annotations
