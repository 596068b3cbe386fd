"""Reads one section of the namespaced ``RINGMASTER`` setting, with documented defaults.

Every app keeps its defaults beside its code and reads them through an ``AppSettings``
(the way DRF's ``api_settings`` works): unknown keys are an error, and values reload when
tests change settings. It lives in ``locks`` because that is the lowest app every other
app may import.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

SECTIONS = ("CLUSTER", "LOCKS", "IDEMPOTENCY", "MONITORING")


class AppSettings:
    """Attribute access to ``settings.RINGMASTER[section]`` merged over ``defaults``."""

    def __init__(self, section: str, defaults: dict[str, Any]) -> None:
        if section not in SECTIONS:
            raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
        self.section = section
        self.defaults = defaults
        self._values: dict[str, Any] | None = None
        setting_changed.connect(self._reload, dispatch_uid=f"ringmaster-settings-{section}")

    def _load(self) -> dict[str, Any]:
        ringmaster = getattr(settings, "RINGMASTER", {}) or {}
        unknown_sections = set(ringmaster) - set(SECTIONS)
        if unknown_sections:
            raise ImproperlyConfigured(
                f"RINGMASTER has unknown sections {sorted(unknown_sections)}; known: {list(SECTIONS)}."
            )
        overrides = ringmaster.get(self.section, {}) or {}
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise ImproperlyConfigured(
                f"RINGMASTER[{self.section!r}] has unknown keys {sorted(unknown)}; known: {sorted(self.defaults)}."
            )
        return {**self.defaults, **overrides}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.defaults:
            raise AttributeError(f"RINGMASTER[{self.section!r}] has no setting {name!r}")
        values = self._values
        if values is None:
            values = self._values = self._load()
        value = values[name]
        # Kept as an instance attribute, so the next read does not come here: locks read settings
        # on every acquire (DRF's api_settings caches its attributes the same way). _reload drops
        # them; if it ran meanwhile, this one is dropped too rather than kept stale.
        setattr(self, name, value)
        if self._values is not values:
            self.__dict__.pop(name, None)
        return value

    def _reload(self, *, setting: str, **kwargs: Any) -> None:
        if setting == "RINGMASTER":
            self._values = None
            for name in self.defaults:
                self.__dict__.pop(name, None)


def settings_errors(app_settings: AppSettings, check_id: str) -> list:
    """System-check errors for a malformed ``RINGMASTER`` section (used by every app's checks.py)."""
    from django.core.checks import Error

    try:
        app_settings._load()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="Fix the RINGMASTER setting in config/settings.py.", id=check_id)]
    return []
