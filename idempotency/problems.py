"""RFC 9457 problem details: the one way Ringmaster's HTTP endpoints report an error."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_type(slug: str) -> str:
    """A stable ``type`` URI for a problem slug (clients may switch on it)."""
    return f"urn:ringmaster:problem:{slug}"


def problem_body(status: int, slug: str, title: str, detail: str = "", **extra: Any) -> dict[str, Any]:
    """The problem document itself, for answers that are not a Django response (an ASGI fast path)."""
    body = {"type": problem_type(slug), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


def problem_response(
    status: int, slug: str, title: str, detail: str = "", *, headers: dict[str, str] | None = None, **extra: Any
) -> HttpResponse:
    body = problem_body(status, slug, title, detail, **extra)
    response = HttpResponse(json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response
