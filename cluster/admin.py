"""Django admin for the ``cluster`` app."""

from __future__ import annotations
