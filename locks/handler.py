"""Resolves the aliases of ``settings.LOCKS`` to backend instances, once per process."""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from .backends.base import BaseLockBackend
from .exceptions import InvalidLockBackend


class LockBackendHandler:
    """Like ``django.core.cache.caches``, but one instance per alias per process (backends are thread-safe)."""

    def __init__(self) -> None:
        self._backends: dict[str, BaseLockBackend] = {}
        self._lock = threading.Lock()

    @staticmethod
    def configs() -> dict[str, Any]:
        configs = getattr(settings, "LOCKS", None)
        if not isinstance(configs, dict):
            raise InvalidLockBackend("settings.LOCKS must be a dict of lock backend aliases.")
        return configs

    def aliases(self) -> list[str]:
        return list(self.configs())

    def __getitem__(self, alias: str) -> BaseLockBackend:
        backend = self._backends.get(alias)
        if backend is not None:
            return backend
        with self._lock:
            backend = self._backends.get(alias)
            if backend is None:
                backend = self._backends[alias] = self.create(alias)
            return backend

    def create(self, alias: str) -> BaseLockBackend:
        configs = self.configs()
        if not isinstance(alias, str) or alias not in configs:
            raise InvalidLockBackend(
                f"backend={alias!r} is not an alias in settings.LOCKS (configured: {sorted(configs)})"
            )
        config = configs[alias]
        path = config.get("BACKEND") if isinstance(config, dict) else None
        if not path:
            raise InvalidLockBackend(f"LOCKS[{alias!r}] has no BACKEND.")
        try:
            backend_class = import_string(path)
        except ImportError as exc:
            raise InvalidLockBackend(f"LOCKS[{alias!r}]['BACKEND'] = {path!r} could not be imported: {exc}") from exc
        return backend_class(alias, config)

    def all(self) -> list[BaseLockBackend]:
        return [self[alias] for alias in self.aliases()]

    def reset(self) -> None:
        """Forget every backend (closing its clients); the next use reads settings.LOCKS again."""
        with self._lock:
            backends, self._backends = self._backends, {}
        for backend in backends.values():
            backend.close()


backends = LockBackendHandler()


def reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("LOCKS", "DATABASES"):
        backends.reset()
