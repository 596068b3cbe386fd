"""Django admin for the ``monitoring`` app."""

from __future__ import annotations
