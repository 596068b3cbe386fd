"""Documented defaults of ``RINGMASTER["IDEMPOTENCY"]``."""

from __future__ import annotations

from datetime import timedelta

from locks.conf import AppSettings

idempotency_settings = AppSettings(
    "IDEMPOTENCY",
    {
        # HTTP methods the Idempotency-Key header applies to; other methods pass straight through.
        "METHODS": ["POST", "PATCH"],
        # False: only views decorated with @idempotent_view. True: every view, through
        # idempotency.middleware.IdempotencyMiddleware (which must then be in MIDDLEWARE).
        "APPLY_TO_ALL_VIEWS": False,
        # Whether a request without the header is refused with 400 (a view's `required=` wins).
        "REQUIRE_KEY": False,
        # Anonymous requests pass through unprotected unless this is True (a view's
        # `allow_anonymous=` wins). With it, anonymous keys are scoped per session when there is
        # one and otherwise shared by every anonymous client: only safe with unguessable keys.
        "ALLOW_ANONYMOUS": False,
        # How long a completed key is replayed (a timedelta or seconds), counted from completion.
        "DEFAULT_TTL": timedelta(hours=24),
        # Lease of an in-flight request or call, in seconds; renewed every third of it while the
        # work runs. A crashed holder's record is taken over once its lease has run out.
        "LEASE_SECONDS": 30.0,
        # Request bodies larger than this get 413 and nothing is stored.
        "MAX_REQUEST_BYTES": 1024 * 1024,
        # Responses (or function results, JSON-encoded) larger than this are not stored: the
        # error is logged and the key released.
        "MAX_RESPONSE_BYTES": 1024 * 1024,
        # Request headers that are part of the fingerprint besides method, path and body.
        "FINGERPRINT_HEADERS": ["Content-Type"],
        # Response headers stored and replayed: "*" for every header the view set, or a list of
        # names. Set-Cookie, Date, Content-Length and hop-by-hop headers are never stored.
        "STORED_HEADERS": "*",
        # Rows deleted per statement by the reaper (purge_idempotency, the beat task).
        "REAPER_BATCH_SIZE": 1000,
        # Dotted path of a callable(request) -> str | None naming who the request acts for
        # ("user:42", "token:ab12", "node:n1"); None means anonymous. See idempotency.scopes.
        "PRINCIPAL_RESOLVER": "idempotency.scopes.request_principal",
        # Database alias holding the records: the views' writes must use it too for the
        # completion to commit in the same transaction as the work.
        "DATABASE": "default",
    },
)
