"""Dashboard URLs (mounted at /dashboard/ by config/urls.py)."""

from django.urls import path

from . import dashboard

app_name = "dashboard"

urlpatterns = [
    path("", dashboard.overview, name="overview"),
]
