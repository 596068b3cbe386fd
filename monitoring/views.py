"""HTTP views of the monitoring app: liveness and readiness probes."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from idempotency.problems import problem_response

from .health import run_checks
from .metrics import render
from .settings import monitoring_settings


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. No I/O, so a slow database never gets the pod killed."""
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: every service the app needs answers, each with its latency."""
    results = run_checks()
    checks = {r.name: r.as_dict() for r in results}
    failing = [r.name for r in results if not r.ok]
    if failing:
        return problem_response(
            503,
            "not-ready",
            "Service unavailable",
            f"failing checks: {', '.join(failing)}",
            failing=failing,
            checks=checks,
        )
    return JsonResponse({"status": "ok", "checks": checks})


LOOPBACK = {"127.0.0.1", "::1"}


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape: a bearer token when METRICS_TOKEN is set, else loopback clients or staff."""
    expected = monitoring_settings.METRICS_TOKEN
    user = getattr(request, "user", None)
    is_staff = user is not None and user.is_authenticated and user.is_staff
    if expected:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        allowed = is_staff or (scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected))
    else:
        allowed = is_staff or request.META.get("REMOTE_ADDR") in LOOPBACK
    if not allowed:
        return problem_response(
            401 if expected else 403, "metrics-forbidden", "Not allowed to scrape", "see RINGMASTER_METRICS_TOKEN"
        )
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
