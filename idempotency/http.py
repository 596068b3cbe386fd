"""The Idempotency-Key flow for one HTTP request, shared by ``@idempotent_view`` and the middleware.

Order of the checks (each failure is an ``application/problem+json`` and stores nothing):
method not covered or anonymous without permission -> the view runs unprotected; no header ->
400 if required, else unprotected; malformed header -> 400; body over MAX_REQUEST_BYTES -> 413;
then one claim statement: same key and fingerprint completed -> the stored response, with
``Idempotent-Replayed: true``; different fingerprint -> 422; still running -> 409 with
``Retry-After``; ours -> the view runs inside ``transaction.atomic()`` and its response is
stored in that same transaction.

What is stored: 2xx, 3xx and 4xx responses the view produced, except 429. A 5xx or 429 rolls
back the view's writes (under ``atomic``) and releases the key; so does an exception. A
response that cannot be stored (streaming, or over MAX_RESPONSE_BYTES) goes to the client, but
its key is released and the error logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from . import services
from .atomic import run_then_complete
from .keys import KeyFormatError, as_timedelta, bounded_scope, parse_key_header, request_fingerprint
from .leases import lease_keeper
from .problems import problem_response
from .scopes import anonymous_principal, principal_resolver
from .settings import idempotency_settings

logger = logging.getLogger("idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Per-connection or per-response headers: replaying them would be wrong, whatever STORED_HEADERS says.
NEVER_STORED = frozenset(
    {
        "set-cookie",
        "date",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        REPLAYED_HEADER.lower(),
    }
)
_HANDLED = "_idempotency_handled"


@dataclass(frozen=True)
class ViewOptions:
    """Per-view overrides of the settings; None means 'use the setting'."""

    required: bool | None = None
    ttl: timedelta | None = None
    methods: tuple[str, ...] | None = None
    allow_anonymous: bool | None = None
    atomic: bool = True


def handle_request(
    request: HttpRequest, call_view: Callable[[], HttpResponseBase], options: ViewOptions
) -> HttpResponseBase:
    """Run ``call_view`` at most once per (principal, method, route, key); see the module docstring."""
    conf = idempotency_settings
    if getattr(request, _HANDLED, False) or request.method not in (options.methods or conf.METHODS):
        return call_view()
    setattr(request, _HANDLED, True)  # the middleware and a decorator on the same view: only one applies

    principal = principal_resolver()(request)
    if principal is None:
        allowed = conf.ALLOW_ANONYMOUS if options.allow_anonymous is None else options.allow_anonymous
        if not allowed:
            return call_view()
        principal = anonymous_principal(request)

    header = request.headers.get(HEADER)
    if header is None:
        required = conf.REQUIRE_KEY if options.required is None else options.required
        if required:
            return problem_response(
                400,
                "idempotency-key-missing",
                "Idempotency-Key header required",
                f"{request.method} {request.path} "
                f'needs an {HEADER} header: a structured-field string such as "8e03978e-40d5-43e8-bc93-6894a57f9324".',
            )
        return call_view()
    try:
        key = parse_key_header(header)
    except KeyFormatError as exc:
        return problem_response(400, "idempotency-key-malformed", "Malformed Idempotency-Key header", str(exc))

    too_large = _too_large(request)
    if too_large:
        return too_large
    fingerprint = request_fingerprint(
        method=request.method,
        path=request.get_full_path(),
        headers=[(name, request.headers.get(name, "")) for name in conf.FINGERPRINT_HEADERS],
        body=request.body,
    )
    route = request.resolver_match.route if request.resolver_match else request.path_info
    scope = bounded_scope(f"{principal} {request.method} {route}")
    ttl = as_timedelta(options.ttl or conf.DEFAULT_TTL, name="ttl")
    using = services.database_alias()

    claim = services.record_claim(scope=scope, key=key, fingerprint=fingerprint, ttl=ttl, using=using)
    if claim.outcome == services.REPLAY:
        return _replay(claim.record)
    if claim.outcome == services.MISMATCH:
        return problem_response(
            422,
            "idempotency-key-mismatch",
            "Idempotency-Key reused with a different request",
            "This key was first used with a different method, path, body or headers; use a new key.",
        )
    if claim.outcome == services.IN_PROGRESS:
        return problem_response(
            409,
            "idempotency-key-in-progress",
            "A request with this Idempotency-Key is in progress",
            "Retry after the time in Retry-After to get its response.",
            headers={"Retry-After": str(claim.retry_after)},
        )
    return _run_claimed(request, call_view, claim, ttl=ttl, using=using, atomic=options.atomic)


def _too_large(request: HttpRequest) -> HttpResponse | None:
    limit = idempotency_settings.MAX_REQUEST_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    # The declared length is checked before reading, so a huge body is never buffered.
    if declared > limit or len(request.body) > limit:
        return problem_response(
            413,
            "idempotency-request-too-large",
            "Request body too large",
            f"Requests with an {HEADER} may carry at most {limit} bytes.",
            max_bytes=limit,
        )
    return None


def _run_claimed(
    request: HttpRequest,
    call_view: Callable[[], HttpResponseBase],
    claim: services.Claim,
    *,
    ttl: timedelta,
    using: str,
    atomic: bool,
) -> HttpResponseBase:
    record, token = claim.record, claim.token
    # Inside a caller's transaction (ATOMIC_REQUESTS) the claim is not committed yet: no other
    # process can see it to take it over, and a renewal from another connection could not either.
    handle = None
    if not connections[using].in_atomic_block:
        handle = lease_keeper.register(
            record_id=record.pk,
            token=token,
            lease_seconds=idempotency_settings.LEASE_SECONDS,
            using=using,
            scope=record.scope,
            key=record.key,
        )
    outcome: dict[str, bool] = {}

    def complete(response: HttpResponseBase, in_transaction: bool) -> None:
        outcome["stored"] = _store(request, response, record=record, token=token, ttl=ttl, using=using)
        if not outcome["stored"] and in_transaction and _retryable(response):
            # A retry must find neither the key nor the failed attempt's writes.
            transaction.set_rollback(True, using=using)

    try:
        response = run_then_complete(call_view, complete, using=using, atomic=atomic)
    except BaseException:
        _release(record, token, using, reason="the view raised")
        raise
    finally:
        if handle is not None:
            lease_keeper.unregister(handle)
    if not outcome["stored"]:
        _release(record, token, using, reason=f"the response ({response.status_code}) was not stored")
    return response


def _retryable(response: HttpResponseBase) -> bool:
    return response.status_code >= 500 or response.status_code == 429


def _store(request: HttpRequest, response: HttpResponseBase, *, record, token: int, ttl: timedelta, using: str) -> bool:
    """Write the completion (inside the view's transaction); False when the response is not to be stored."""
    if _retryable(response):
        return False
    if response.streaming:
        logger.error(
            "idempotency: streaming response not stored, key released scope=%s key=%s path=%s",
            record.scope,
            record.key,
            request.path,
        )
        return False
    render = getattr(response, "render", None)
    if callable(render):
        response = render()
    body = response.content
    limit = idempotency_settings.MAX_RESPONSE_BYTES
    if len(body) > limit:
        logger.error(
            "idempotency: response of %d bytes exceeds MAX_RESPONSE_BYTES=%d, not stored, key released "
            "(a retry will run the view again) scope=%s key=%s path=%s",
            len(body),
            limit,
            record.scope,
            record.key,
            request.path,
        )
        return False
    services.record_complete(
        record=record,
        token=token,
        ttl=ttl,
        response_status=response.status_code,
        response_headers=_stored_headers(response),
        response_body=body,
        using=using,
    )
    return True


def _stored_headers(response: HttpResponseBase) -> list[list[str]]:
    wanted = idempotency_settings.STORED_HEADERS
    selected = None if wanted == "*" else {name.lower() for name in wanted}
    return [
        [name, value]
        for name, value in response.items()
        if name.lower() not in NEVER_STORED and (selected is None or name.lower() in selected)
    ]


def _replay(record) -> HttpResponse:
    response = HttpResponse(bytes(record.response_body or b""), status=record.response_status)
    del response["Content-Type"]
    for name, value in record.response_headers:
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    return response


def _release(record, token: int, using: str, *, reason: str) -> None:
    try:
        services.record_release(record=record, token=token, using=using)
    except Exception:
        # The lease runs out on its own and the next attempt takes the key over: log, do not mask.
        logger.exception(
            "idempotency: could not release key scope=%s key=%s token=%s (%s)", record.scope, record.key, token, reason
        )
