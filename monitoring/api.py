"""The JSON API under ``/api/v1/``: node heartbeats and read-only cluster state, with an OpenAPI schema.

Every error is ``application/problem+json``: the API's own, ninja's (validation, 404), and the ones
raised around an operation (no such path, method not allowed). Nodes authenticate with their own
bearer token (stored hashed, compared in constant time); people use their staff session. Each node's
heartbeats are rate limited (``monitoring/ratelimit.py``, 429 with ``Retry-After``).
"""

from __future__ import annotations

import functools
import logging
import time
from http import HTTPStatus
from typing import Annotated, Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import re_path
from ninja import NinjaAPI, Path, Query, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyHeader
from pydantic import Field

from cluster.models import NODE_NAME_RE, MembershipEvent, Node
from cluster.selectors import current_ring, node_for_token
from idempotency.problems import PROBLEM_CONTENT_TYPE, problem_response

from . import selectors
from .heartbeats import HeartbeatStoreUnavailable
from .middleware import database_unavailable
from .ratelimit import get_limiter, refusal_detail
from .services import heartbeat_record
from .settings import monitoring_settings

logger = logging.getLogger(__name__)

# The largest incarnation a node may announce: Node.incarnation is a PositiveIntegerField, and a
# higher one reaches the database when the sweeper applies the restart.
MAX_INCARNATION = 2**31 - 1
MAX_SEQ = 2**63 - 1


class ApiProblem(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail, self.extra = status, slug, title, detail, extra


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class StaffOrNodeToken(APIKeyHeader):
    """Read access: a staff session, or any node's bearer token."""

    param_name = "Authorization"
    openapi_description = "A node's token as `Bearer <token>`, or a staff session cookie."

    def __call__(self, request: HttpRequest):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff:
            return user
        return super().__call__(request)

    def authenticate(self, request: HttpRequest, key: str | None):
        token = _bearer(request)
        return node_for_token(token) if token else None


def _not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return problem_response(404, "not-found", "Not found", f"no API endpoint at {request.path}")


def _problems_only(view):
    """Wrap a URL's view so the errors ninja answers outside an operation are problem+json too.

    Ninja's own 405 (a known path, another method) is plain text and its root raises Http404;
    everything an operation raises goes through the exception handlers below.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except Http404:
            return _not_found(request)
        if response.status_code < 400 or response.get("Content-Type") == PROBLEM_CONTENT_TYPE:
            return response
        phrase = HTTPStatus(response.status_code).phrase
        headers = {"Allow": response["Allow"]} if response.has_header("Allow") else None
        slug = "method-not-allowed" if response.status_code == 405 else phrase.lower().replace(" ", "-")
        detail = f"{request.method} is not allowed here" if response.status_code == 405 else phrase
        return problem_response(response.status_code, slug, phrase, detail, headers=headers)

    return wrapper


class RingmasterAPI(NinjaAPI):
    """Ninja with problem+json for every error, including unknown paths below the API's prefix."""

    @property
    def urls(self):
        patterns, app_name, namespace = super().urls
        for pattern in patterns:
            pattern.callback = _problems_only(pattern.callback)
        return [*patterns, re_path(r"^", _not_found)], app_name, namespace

    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: dict | None = None):
        """The schema, with error responses documented as the problem+json they are (ninja says JSON)."""
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if int(status) >= 400 and "application/json" in content:
                        content[PROBLEM_CONTENT_TYPE] = content.pop("application/json")
        return schema


api = RingmasterAPI(
    title="Ringmaster API",
    version="1",
    urls_namespace="api-v1",
    openapi_url="/openapi.json",
    docs_url=None,
    auth=StaffOrNodeToken(),
)


@api.exception_handler(ApiProblem)
def _problem(request: HttpRequest, exc: ApiProblem) -> HttpResponse:
    return problem_response(exc.status, exc.slug, exc.title, exc.detail, **exc.extra)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "payload")), "message": e.get("msg")}
        for e in exc.errors
    ]
    fields = ", ".join(e["field"] or "body" for e in errors)
    return problem_response(400, "invalid-request", "Invalid request", f"invalid fields: {fields}", errors=errors)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return problem_response(
        401,
        "unauthenticated",
        "Authentication required",
        "send a node token as 'Authorization: Bearer <token>' or log in as staff",
        headers={"WWW-Authenticate": 'Bearer realm="ringmaster"'},
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return problem_response(exc.status_code, "http-error", str(exc) or "Error", str(exc))


@api.exception_handler(Http404)
def _http404(request: HttpRequest, exc: Http404) -> HttpResponse:
    return problem_response(404, "not-found", "Not found", str(exc) or f"nothing at {request.path}")


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return problem_response(413, "body-too-large", "Body too large", str(exc))


@api.exception_handler(SuspiciousOperation)
def _suspicious(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
    # What Django itself answers 400 to (a bad Host, a malformed multipart body, ...).
    return problem_response(400, "bad-request", "Bad request", str(exc))


@api.exception_handler(Exception)
def _internal_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    # Logged with its traceback for the operator; the client learns nothing about the internals.
    logger.exception("API error on %s %s", request.method, request.path)
    return problem_response(500, "internal-error", "Internal server error", "the error was logged")


@api.exception_handler(HeartbeatStoreUnavailable)
def _store_down(request: HttpRequest, exc: HeartbeatStoreUnavailable) -> HttpResponse:
    return problem_response(
        503, "heartbeat-store-unavailable", "Heartbeat store unavailable", str(exc), headers={"Retry-After": "1"}
    )


# The database restarting or failing over: a 503 the client may retry, not a 500 (see monitoring/middleware.py).
api.add_exception_handler(OperationalError, database_unavailable)
api.add_exception_handler(InterfaceError, database_unavailable)


# --- schemas ----------------------------------------------------------------------------------


NodeName = Annotated[str, Path(pattern=NODE_NAME_RE, description="a node name")]
# JSON has no NaN or infinity; Python's parser accepts them, and they would make the read API's JSON invalid.
LoadValue = Annotated[float, Field(allow_inf_nan=False)] | int | Annotated[str, Field(max_length=256)] | None


class HeartbeatIn(Schema):
    incarnation: int = Field(
        ge=1, le=MAX_INCARNATION, description="the node process's incarnation; a restart uses a higher one"
    )
    seq: int = Field(ge=0, le=MAX_SEQ, description="sequence number of this beat within the incarnation")
    load: dict[Annotated[str, Field(max_length=64)], LoadValue] = Field(default_factory=dict, max_length=32)


class HeartbeatOut(Schema):
    node: str
    state: str
    incarnation: int
    interval: float


class NodeOut(Schema):
    name: str
    address: str
    zone: str
    weight: float
    state: str
    incarnation: int
    share: float
    last_heartbeat_age: float | None
    phi: float | None
    load: dict[str, Any]
    metadata: dict[str, Any]


class RingOut(Schema):
    epoch: int
    partitions: int
    nodes: list[dict[str, Any]]


class EventOut(Schema):
    id: int
    node: str
    from_state: str
    to_state: str
    epoch: int
    incarnation: int
    reason: str
    actor: str
    created_at: str


class Problem(Schema):
    type: str
    title: str
    status: int
    detail: str | None = None


# --- endpoints -------------------------------------------------------------------------------


class NodeToken(APIKeyHeader):
    """A node's own bearer token: 401 when missing or unknown, 403 when it is another node's."""

    param_name = "Authorization"
    openapi_description = "The node's token as `Bearer <token>`."

    def authenticate(self, request: HttpRequest, key: str | None) -> Node:
        token = _bearer(request)
        if token is None:
            raise ApiProblem(401, "unauthenticated", "Authentication required", "missing 'Authorization: Bearer' token")
        holder = node_for_token(token)
        if holder is None:
            raise ApiProblem(401, "unauthenticated", "Authentication required", "unknown or revoked token")
        if holder.name != request.resolver_match.kwargs.get("name"):
            raise ApiProblem(403, "forbidden", "Forbidden", "this token belongs to another node")
        # After the token check, so nobody without it can spend a node's budget and get it declared dead.
        _check_rate(holder.name)
        # Checked here because authentication runs before the body is parsed.
        limit = monitoring_settings.HEARTBEAT_MAX_BODY
        declared = str(request.META.get("CONTENT_LENGTH") or "0").strip()
        if not declared.isdigit():
            raise ApiProblem(400, "invalid-request", "Invalid request", "Content-Length must be a number of bytes")
        if int(declared) > limit or len(request.body) > limit:
            raise ApiProblem(413, "body-too-large", "Body too large", f"at most {limit} bytes")
        return holder


def _check_rate(node: str) -> None:
    limiter = get_limiter()
    if limiter is None:
        return
    decision = limiter.hit(node, now=time.time())
    if not decision.allowed:
        raise ApiProblem(429, "rate-limited", "Too many heartbeats", **rate_limited(node, decision.retry_after))


def rate_limited(node: str, retry_after: float) -> dict[str, Any]:
    """The 429's detail and headers (also answered by the ASGI fast path, monitoring/gateway.py)."""
    detail, seconds = refusal_detail(node, get_limiter().limit, retry_after)
    return {"detail": detail, "headers": {"Retry-After": str(seconds)}}


def heartbeat_reply(*, name: str, state: str, incarnation: int) -> dict[str, Any]:
    """The body of an accepted heartbeat: the node's state as the cluster sees it, and when to beat next."""
    return {
        "node": name,
        "state": state,
        "incarnation": incarnation,
        "interval": monitoring_settings.HEARTBEAT_INTERVAL,
    }


@api.post(
    "/nodes/{name}/heartbeat",
    auth=NodeToken(),
    response={
        200: HeartbeatOut,
        400: Problem,
        401: Problem,
        403: Problem,
        409: Problem,
        413: Problem,
        429: Problem,
        503: Problem,
    },
    summary="A node's heartbeat (Authorization: Bearer <the node's token>)",
)
def heartbeat(request: HttpRequest, name: NodeName, payload: HeartbeatIn):
    node: Node = request.auth
    if payload.incarnation < node.incarnation:
        raise ApiProblem(
            409,
            "stale-incarnation",
            "Stale incarnation",
            f"incarnation {payload.incarnation} is older than the node's current {node.incarnation}",
        )
    heartbeat_record(node=name, incarnation=payload.incarnation, seq=payload.seq, load=payload.load, path="http")
    return heartbeat_reply(name=name, state=node.state, incarnation=node.incarnation)


@api.get(
    "/nodes", response={200: list[NodeOut], 401: Problem}, summary="Every node with its state, share, phi and load"
)
def nodes(request: HttpRequest):
    return selectors.node_overview()


@api.get("/nodes/{name}", response={200: NodeOut, 400: Problem, 401: Problem, 404: Problem}, summary="One node")
def node_detail(request: HttpRequest, name: NodeName):
    for row in selectors.node_overview(names=[name]):
        return row
    raise ApiProblem(404, "not-found", "Not found", f"no node named {name!r}")


@api.get("/ring", response={200: RingOut, 401: Problem}, summary="The ring of the current epoch: each node's share")
def ring(request: HttpRequest):
    current = current_ring()
    return {
        "epoch": current.epoch,
        "partitions": current.partitions,
        "nodes": [
            {"name": n, "weight": current.weights[n], "zone": current.zones.get(n, ""), "share": current.share(n)}
            for n in current.nodes
        ],
    }


@api.get(
    "/events",
    response={200: list[EventOut], 400: Problem, 401: Problem},
    summary="Recent membership events, newest first",
)
def events(
    request: HttpRequest,
    limit: Annotated[int, Query(ge=1, le=1000, description="how many events (1 to 1000)")] = 100,
    node: Annotated[str | None, Query(pattern=NODE_NAME_RE, description="only this node's events")] = None,
):
    qs = MembershipEvent.objects.select_related("node").order_by("-id")
    if node:
        qs = qs.filter(node__name=node)
    return [
        {
            "id": e.id,
            "node": e.node.name,
            "from_state": e.from_state,
            "to_state": e.to_state,
            "epoch": e.epoch,
            "incarnation": e.incarnation,
            "reason": e.reason,
            "actor": e.actor,
            "created_at": e.created_at.isoformat(),
        }
        for e in qs[:limit]
    ]
