"""Dashboard URLs (mounted at /dashboard/ by config/urls.py; the live stream is /ws/cluster/)."""

from django.urls import path

from . import dashboard

app_name = "dashboard"

urlpatterns = [
    path("", dashboard.overview, name="overview"),
    path("ring/", dashboard.ring, name="ring"),
    path("jobs/", dashboard.jobs, name="jobs"),
    path("locks/", dashboard.locks, name="locks"),
    path("idempotency/", dashboard.idempotency, name="idempotency"),
]
