"""Who a request acts for: the principal that scopes its idempotency keys.

Two clients sending the same key must never see each other's responses, so every key lives in
the scope of one principal (plus the method and route). ``request_principal`` is the default
``PRINCIPAL_RESOLVER``:

1. ``request.idempotency_principal`` when an authentication layer set it (an API-token
   middleware sets ``"token:<token id>"``, node authentication ``"node:<name>"``);
2. ``"user:<pk>"`` for an authenticated Django user;
3. otherwise ``None``: the request is anonymous.

Authentication that happens inside the view (DRF's authenticators) runs after the key is
claimed, so such an API must set ``request.idempotency_principal`` in a middleware, or point
``PRINCIPAL_RESOLVER`` at its own function.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.utils.module_loading import import_string

from .settings import idempotency_settings


def request_principal(request: HttpRequest) -> str | None:
    explicit = getattr(request, "idempotency_principal", None)
    if explicit:
        return str(explicit)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return None


def anonymous_principal(request: HttpRequest) -> str:
    """Anonymous keys are scoped per session when there is one, else shared by all anonymous clients."""
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    return f"anonymous:{session_key}" if session_key else "anonymous"


_resolvers: dict[str, Callable[[HttpRequest], str | None]] = {}


def principal_resolver() -> Callable[[HttpRequest], str | None]:
    path = idempotency_settings.PRINCIPAL_RESOLVER
    if path not in _resolvers:
        _resolvers[path] = import_string(path)
    return _resolvers[path]
