"""Models of the ``locks`` app."""

from __future__ import annotations
