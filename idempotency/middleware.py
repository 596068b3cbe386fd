"""``IdempotencyMiddleware``: the Idempotency-Key header on every view, when APPLY_TO_ALL_VIEWS is on.

With the setting off (the default) it does nothing and views opt in with ``@idempotent_view``,
which works with or without this middleware. Put it after ``AuthenticationMiddleware``: keys are
scoped per user. With the setting on it runs the view itself from ``process_view`` (a middleware
cannot otherwise wrap the view in the transaction that carries the completion), so for those
requests the view's exceptions skip the ``process_exception`` of middlewares below it, and its
own ``transaction.atomic()`` stands in for ``ATOMIC_REQUESTS``. Async views are left alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from .http import ViewOptions, handle_request
from .settings import idempotency_settings

_DEFAULTS = ViewOptions()


class IdempotencyMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable, view_args: tuple, view_kwargs: dict
    ) -> HttpResponseBase | None:
        if not idempotency_settings.APPLY_TO_ALL_VIEWS or request.method not in idempotency_settings.METHODS:
            return None
        # A decorated view applies its own options; async views cannot be called from here.
        if hasattr(view_func, "idempotency_options") or inspect.iscoroutinefunction(view_func):
            return None
        return handle_request(request, lambda: view_func(request, *view_args, **view_kwargs), _DEFAULTS)
