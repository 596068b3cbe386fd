"""URL configuration: the admin, health probes, and each app's URLs."""

from django.contrib import admin
from django.urls import include, path

from monitoring import views as monitoring_views
from monitoring.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", monitoring_views.healthz, name="healthz"),
    path("readyz", monitoring_views.readyz, name="readyz"),
    path("metrics", monitoring_views.metrics, name="metrics"),
    path("api/v1/", api.urls),
    path("dashboard/", include("monitoring.urls")),
]
