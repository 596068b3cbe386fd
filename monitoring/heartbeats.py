"""The heartbeat store: the latest beat of every node, kept out of the database.

A beat a second from every node would be a database write a second per node; instead the latest
beat lives in a fast shared store (Redis through the cache in the real deployment, the file cache
in the embedded default) and the sweeper copies ``last_heartbeat_at`` to the database every few
seconds. Stores are pluggable: ``RINGMASTER["MONITORING"]["HEARTBEAT_STORE"]`` names a ``BACKEND``
class and its ``OPTIONS``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .settings import monitoring_settings


@dataclass(frozen=True)
class Beat:
    incarnation: int
    seq: int
    received_at: float  # wall-clock seconds (time.time()) where the beat was received
    load: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        # By hand: dataclasses.asdict deep-copies the load dict, a fifth of a beat's cost.
        beat = {"incarnation": self.incarnation, "seq": self.seq, "received_at": self.received_at, "load": self.load}
        return json.dumps(beat, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Beat:
        return cls(**json.loads(raw))


class HeartbeatStoreUnavailable(Exception):
    """The heartbeat store did not answer; the sweeper convicts nobody while this lasts."""


class BaseHeartbeatStore:
    def record(self, node: str, beat: Beat) -> None:
        raise NotImplementedError

    def latest(self, nodes: Iterable[str]) -> dict[str, Beat]:
        """The latest beat of each named node that has one."""
        raise NotImplementedError

    def forget(self, node: str) -> None:
        raise NotImplementedError


class CacheHeartbeatStore(BaseHeartbeatStore):
    """Beats as cache entries (one key per node): Redis with django-redis, files in the embedded default."""

    def __init__(self, *, cache: str = "default", ttl: int = 3600, prefix: str = "rm:hb:") -> None:
        self.cache_alias, self.ttl, self.prefix = cache, ttl, prefix

    @property
    def _cache(self):
        return caches[self.cache_alias]

    def record(self, node: str, beat: Beat) -> None:
        try:
            self._cache.set(self.prefix + node, beat.to_json(), timeout=self.ttl)
        except Exception as exc:  # the cache backends raise their client's own errors
            raise HeartbeatStoreUnavailable(f"could not record a beat of {node}: {exc}") from exc

    def latest(self, nodes: Iterable[str]) -> dict[str, Beat]:
        keys = {self.prefix + n: n for n in nodes}
        if not keys:
            return {}
        try:
            found = self._cache.get_many(list(keys))
        except Exception as exc:
            raise HeartbeatStoreUnavailable(f"could not read beats: {exc}") from exc
        return {keys[k]: Beat.from_json(v) for k, v in found.items()}

    def forget(self, node: str) -> None:
        self._cache.delete(self.prefix + node)


_store: BaseHeartbeatStore | None = None
_store_lock = threading.Lock()


def get_store() -> BaseHeartbeatStore:
    """The configured store, built once per process."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                config = monitoring_settings.HEARTBEAT_STORE
                try:
                    cls = import_string(config["BACKEND"])
                except (ImportError, KeyError) as exc:
                    raise ImproperlyConfigured(
                        f"RINGMASTER['MONITORING']['HEARTBEAT_STORE'] has no importable BACKEND: {exc}"
                    ) from exc
                _store = cls(**config.get("OPTIONS", {}))
    return _store


def _reset_store(*, setting: str, **kwargs: Any) -> None:
    global _store
    if setting in ("RINGMASTER", "CACHES"):
        _store = None


setting_changed.connect(_reset_store, dispatch_uid="monitoring-reset-heartbeat-store")
