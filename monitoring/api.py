"""The JSON API under ``/api/v1/``: node heartbeats and read-only cluster state, with an OpenAPI schema.

Every error is ``application/problem+json``. Nodes authenticate with their own bearer token
(stored hashed, compared in constant time); people use their staff session.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyHeader
from pydantic import Field

from cluster.models import MembershipEvent, Node
from cluster.selectors import current_ring
from cluster.services import hash_token
from idempotency.problems import problem_response

from . import selectors
from .heartbeats import HeartbeatStoreUnavailable
from .services import heartbeat_record
from .settings import monitoring_settings


class ApiProblem(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail, self.extra = status, slug, title, detail, extra


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _node_for_token(token: str) -> Node | None:
    return Node.objects.filter(token_hash=hash_token(token)).only("name", "state", "incarnation").first()


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
        return _node_for_token(token) if token else None


api = NinjaAPI(
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


@api.exception_handler(HeartbeatStoreUnavailable)
def _store_down(request: HttpRequest, exc: HeartbeatStoreUnavailable) -> HttpResponse:
    return problem_response(
        503, "heartbeat-store-unavailable", "Heartbeat store unavailable", str(exc), headers={"Retry-After": "1"}
    )


# --- schemas ----------------------------------------------------------------------------------


class HeartbeatIn(Schema):
    incarnation: int = Field(ge=1, description="the node process's incarnation; a restart uses a higher one")
    seq: int = Field(ge=0, description="sequence number of this beat within the incarnation")
    load: dict[str, float | int | str | None] = Field(default_factory=dict, max_length=32)


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
        holder = _node_for_token(token)
        if holder is None:
            raise ApiProblem(401, "unauthenticated", "Authentication required", "unknown or revoked token")
        if holder.name != request.resolver_match.kwargs.get("name"):
            raise ApiProblem(403, "forbidden", "Forbidden", "this token belongs to another node")
        # Checked here because authentication runs before the body is parsed.
        limit = monitoring_settings.HEARTBEAT_MAX_BODY
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit or len(request.body) > limit:
            raise ApiProblem(413, "body-too-large", "Body too large", f"at most {limit} bytes")
        return holder


@api.post(
    "/nodes/{name}/heartbeat",
    auth=NodeToken(),
    response={200: HeartbeatOut, 400: Problem, 401: Problem, 403: Problem, 409: Problem, 413: Problem},
    summary="A node's heartbeat (Authorization: Bearer <the node's token>)",
)
def heartbeat(request: HttpRequest, name: str, payload: HeartbeatIn):
    node: Node = request.auth
    if payload.incarnation < node.incarnation:
        raise ApiProblem(
            409,
            "stale-incarnation",
            "Stale incarnation",
            f"incarnation {payload.incarnation} is older than the node's current {node.incarnation}",
        )
    heartbeat_record(node=name, incarnation=payload.incarnation, seq=payload.seq, load=payload.load, path="http")
    return {
        "node": name,
        "state": node.state,
        "incarnation": node.incarnation,
        "interval": monitoring_settings.HEARTBEAT_INTERVAL,
    }


@api.get("/nodes", response=list[NodeOut], summary="Every node with its state, share, phi and load")
def nodes(request: HttpRequest):
    return selectors.node_overview()


@api.get("/nodes/{name}", response={200: NodeOut, 404: Problem}, summary="One node")
def node_detail(request: HttpRequest, name: str):
    for row in selectors.node_overview(names=[name]):
        return row
    raise ApiProblem(404, "not-found", "Not found", f"no node named {name!r}")


@api.get("/ring", response=RingOut, summary="The ring of the current epoch: each node's share")
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


@api.get("/events", response=list[EventOut], summary="Recent membership events, newest first")
def events(request: HttpRequest, limit: int = 100, node: str | None = None):
    if not 1 <= limit <= 1000:
        raise ApiProblem(400, "invalid-request", "Invalid request", "limit must be between 1 and 1000")
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
