"""HTTP views of the monitoring app: liveness and readiness probes."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from idempotency.problems import problem_response

from .health import run_checks


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
