"""Models of the ``cluster`` app."""

from __future__ import annotations
