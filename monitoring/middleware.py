"""503, never a 500 traceback, while the database is unreachable (a restart, a failover, a network cut).

Django reconnects by itself once the database is back (``CONN_HEALTH_CHECKS``); until then a
request that needs it fails with ``OperationalError`` or ``InterfaceError``. This middleware
answers those with ``503 Service Unavailable`` and ``Retry-After``: RFC 9457 problem details for
API clients, a plain page for a browser. The API (django-ninja handles its own exceptions)
registers ``database_unavailable`` as its handler for the same two errors.

It only sees errors raised by views. Errors raised by a middleware (none of ours queries the
database on a GET) and by a view run from ``IdempotencyMiddleware.process_view`` (only with
``APPLY_TO_ALL_VIEWS``) still reach Django's own 500 handling.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from idempotency.problems import problem_response

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER = "5"
HTML_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Service unavailable</title>"
    "<h1>Service unavailable</h1><p>The database is not answering. This page will work again when it is back; "
    "try again in a few seconds.</p></html>"
)


def database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The 503 answer to a request that failed because the database did not answer."""
    logger.error("database unavailable for %s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
    accept = request.headers.get("Accept", "")
    if "text/html" in accept and not request.path.startswith("/api/"):
        response = HttpResponse(HTML_PAGE, status=503, content_type="text/html; charset=utf-8")
        response["Retry-After"] = RETRY_AFTER
        return response
    # The detail stays generic: the driver's message names hosts and ports.
    return problem_response(
        503,
        "database-unavailable",
        "Database unavailable",
        "the database did not answer; retry shortly",
        headers={"Retry-After": RETRY_AFTER},
    )


class DatabaseUnavailableMiddleware:
    """Turns a view's ``OperationalError``/``InterfaceError`` into a 503 (see the module docstring)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable(request, exception)
        return None
