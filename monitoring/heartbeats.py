"""The heartbeat store: the latest beat of every node, kept out of the database.

A beat a second from every node would be a database write a second per node; instead the latest
beat lives in a fast shared store (Redis through the cache in the real deployment, the file cache
in the embedded default) and the sweeper copies ``last_heartbeat_at`` to the database every few
seconds. Stores are pluggable: ``RINGMASTER["MONITORING"]["HEARTBEAT_STORE"]`` names a ``BACKEND``
class and its ``OPTIONS``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils.module_loading import import_string

from cluster.models import Node

from .settings import monitoring_settings

logger = logging.getLogger(__name__)


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


# --- auth versions of the heartbeat API's fast path (monitoring/gateway.py) ------------------
#
# A counter per node that every server process compares with the one its cached copy of the
# node's token was loaded at. Bumped after every commit that saves the node's row.

VERSION_KEY_PREFIX = "rm:hb-auth:"


def version_cache():
    """The heartbeat API's cache (``HEARTBEAT_RATE_CACHE``): rate-limit state and auth versions."""
    return caches[monitoring_settings.HEARTBEAT_RATE_CACHE]


def auth_version(name: str) -> int:
    """The node's current auth version, created (at a random value) when the cache has none."""
    cache, key = version_cache(), VERSION_KEY_PREFIX + name
    # Random, not 0: after the cache loses its keys, a fresh version never equals one cached before.
    cache.add(key, secrets.randbelow(2**52) + 1, timeout=None)
    version = cache.get(key)
    if version is None:
        raise HeartbeatStoreUnavailable(f"the auth version of {name} could not be kept")
    return int(version)


def auth_version_bump(name: str) -> None:
    """Invalidate every process's cached token of ``name`` (called after the commit that changed it)."""
    cache, key = version_cache(), VERSION_KEY_PREFIX + name
    try:
        try:
            cache.incr(key)
        except ValueError:  # no version yet: nobody cached this node's token
            cache.add(key, secrets.randbelow(2**52) + 1, timeout=None)
    except Exception:  # the cache is down: cached tokens expire within CACHE_MAX_AGE
        logger.exception("could not bump the heartbeat auth version of node %s", name)


def _node_changed(sender: Any, instance: Node, **kwargs: Any) -> None:
    # After commit: a bump before it would let a reload read the old row and cache it as current.
    name = instance.name
    transaction.on_commit(lambda: auth_version_bump(name))


post_save.connect(_node_changed, sender=Node, dispatch_uid="monitoring-gateway-node-saved")
post_delete.connect(_node_changed, sender=Node, dispatch_uid="monitoring-gateway-node-deleted")
