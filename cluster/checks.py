"""System checks of the cluster app."""

from __future__ import annotations

from django.core.checks import register

from locks.conf import settings_errors

from .settings import cluster_settings


@register()
def check_cluster_settings(app_configs, **kwargs) -> list:
    return settings_errors(cluster_settings, "cluster.E001")
