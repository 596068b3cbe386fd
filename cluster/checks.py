"""System checks of the cluster app."""

from __future__ import annotations

from django.core.checks import register

from locks.conf import settings_errors

from .settings import cluster_settings


@register()
def check_cluster_settings(app_configs, **kwargs) -> list:
    return settings_errors(cluster_settings, "cluster.E001")


@register()
def check_visibility_timeout(app_configs, **kwargs) -> list:
    """A broker that redelivers unacked messages after a visibility timeout must not do it mid-lock."""
    from celery import current_app
    from django.core.checks import Warning
    from django.utils.module_loading import autodiscover_modules

    from .tasks import REGISTRY

    autodiscover_modules("tasks")  # registers every app's cluster_tasks
    options = current_app.conf.broker_transport_options or {}
    if "visibility_timeout" not in options:
        return []
    timeout = float(options["visibility_timeout"])
    return [
        Warning(
            f"cluster_task {name} has lock_ttl {task.spec.lock_ttl}s, not below the broker's visibility timeout "
            f"({timeout}s): a job still running under its lock could be delivered a second time.",
            hint="Raise CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] or lower the task's lock_ttl.",
            id="cluster.W001",
        )
        for name, task in sorted(REGISTRY.items())
        if task.spec.lock_ttl >= timeout
    ]
