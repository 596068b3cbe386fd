"""Reads across every configured lock backend (for the admin and monitoring)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .exceptions import LockBackendUnavailable
from .handler import backends
from .lease import LeaseInfo


@dataclass(frozen=True)
class HeldLock:
    """A held lock and every alias that reaches its store (``default`` often shares one)."""

    info: LeaseInfo
    aliases: tuple[str, ...]

    @property
    def alias(self) -> str:
        return self.aliases[0]

    def age(self, now: datetime) -> timedelta:
        return now - self.info.acquired_at

    def expires_in(self, now: datetime) -> timedelta:
        return self.info.expires_at - now


def backend_groups() -> list[tuple[str, ...]]:
    """Aliases grouped by the store they reach, each group's own name first and ``default`` last."""
    groups: dict[tuple, list[str]] = {}
    for alias in backends.aliases():
        groups.setdefault(backends[alias].store_key(), []).append(alias)
    return [tuple(sorted(aliases, key=lambda a: (a == "default", a))) for aliases in groups.values()]


def held_lock_list(*, backend: str | None = None, search: str = "") -> tuple[list[HeldLock], dict[str, str]]:
    """Held locks of every store (or of the one ``backend`` reaches) whose name or owner contains
    ``search``, oldest first; and, per unreachable store, its error."""
    needle = search.strip().lower()
    rows: list[HeldLock] = []
    errors: dict[str, str] = {}
    for aliases in backend_groups():
        if backend and backend not in aliases:
            continue
        try:
            infos = backends[aliases[0]].held()
        except LockBackendUnavailable as exc:
            errors[aliases[0]] = str(exc)
            continue
        rows.extend(
            HeldLock(info, aliases)
            for info in infos
            if not needle or needle in info.name.lower() or needle in info.owner.lower()
        )
    rows.sort(key=lambda row: row.info.acquired_at)
    return rows, errors
