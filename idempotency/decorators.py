"""``@idempotent`` for functions and tasks, ``@idempotent_view`` for views.

The transaction pattern both follow: the claim is its own statement, committed before the work
starts, so a concurrent duplicate sees it at once; the work then runs inside
``transaction.atomic()`` and the completion is written in that same transaction just before it
commits. A crash before the commit leaves neither the work's writes nor a completed record (the
claim stays ``in_progress`` until its lease runs out, and the next attempt takes it over); a
crash after leaves both. Effects outside the database (an e-mail, a payment API call) are not
covered by the transaction: make them idempotent themselves, or enqueue them with
``transaction.on_commit``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, models

from .atomic import run_then_complete
from .exceptions import IdempotencyInProgress, IdempotencyKeyMismatch, InvalidIdempotencyKey
from .keys import KeyFormatError, arguments_fingerprint, as_timedelta, bounded_scope, validate_key

logger = logging.getLogger("idempotency")

F = TypeVar("F", bound=Callable[..., Any])

# Backoff while waiting for another attempt: short at first (most work is short), capped at 1 s.
_WAIT_FIRST, _WAIT_MAX = 0.05, 1.0


@dataclass(frozen=True)
class FunctionOptions:
    """How ``@idempotent`` was configured; read by the task decorator that composes it."""

    key: str | Callable[..., str]
    scope: str
    ttl: timedelta | None
    wait: float
    atomic: bool
    lease_seconds: float | None
    using: str | None


class _ArgumentEncoder(DjangoJSONEncoder):
    """Canonical JSON of call arguments: model instances by label and pk, anything else by repr."""

    def default(self, o: Any) -> Any:
        if isinstance(o, models.Model):
            return {"model": o._meta.label, "pk": o.pk}
        if isinstance(o, set | frozenset):
            return sorted(o, key=repr)
        try:
            return super().default(o)
        except TypeError:
            return {"repr": repr(o)}


def idempotent(
    key: str | Callable[..., str],
    *,
    ttl: timedelta | float | None = None,
    scope: str | None = None,
    wait: float = 0.0,
    atomic: bool = True,
    lease_seconds: float | None = None,
    using: str | None = None,
) -> Callable[[F], F]:
    """Run the decorated function once per key; later calls with the key return its stored result.

    ``key`` is a ``str.format`` template over the call's arguments (``"transfer:{transfer_id}"``,
    ``"{order.pk}"``) or a callable taking the same arguments and returning the key. ``scope``
    defaults to ``fn:<module>.<qualname>``. The result must be JSON-serialisable. A call with the
    same key and different arguments raises ``IdempotencyKeyMismatch``; one while another attempt
    runs raises ``IdempotencyInProgress``, or waits up to ``wait`` seconds for its result. With
    ``atomic`` (the default) the function runs in ``transaction.atomic(using)`` together with the
    completion; an exception rolls it back and releases the key.
    """
    if not (isinstance(key, str) or callable(key)):
        raise TypeError(f"key must be a format string or a callable, got {key!r}")
    if isinstance(key, str) and not key:
        raise ValueError("key must not be empty")
    if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
        raise ValueError(f"wait must be a number of seconds >= 0, got {wait!r}")
    if lease_seconds is not None and lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    if ttl is not None:
        ttl = as_timedelta(ttl, name="ttl")

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):
            raise TypeError(f"@idempotent does not support coroutine functions ({func.__qualname__})")
        signature = inspect.signature(func)
        if isinstance(key, str):
            _check_template(key, signature, func)
        options = FunctionOptions(
            key=key,
            scope=bounded_scope(scope or f"fn:{func.__module__}.{func.__qualname__}"),
            ttl=ttl,
            wait=float(wait),
            atomic=atomic,
            lease_seconds=lease_seconds,
            using=using,
        )

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            the_key = _key_for(options, func, bound, args, kwargs)
            canonical = json.dumps(bound.arguments, cls=_ArgumentEncoder, sort_keys=True, separators=(",", ":"))
            return _call(func, options, the_key, arguments_fingerprint(canonical), args, kwargs)

        wrapper.idempotency = options  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _check_template(template: str, signature: inspect.Signature, func: Callable) -> None:
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # names may arrive through **kwargs: checked per call
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        root = field.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise ValueError(f"key template {template!r} of {func.__qualname__} must name arguments, not positions")
        if root not in params:
            raise ValueError(
                f"key template {template!r} of {func.__qualname__} uses {{{root}}}, which is not one of its "
                f"arguments ({', '.join(params)})"
            )


def _key_for(options: FunctionOptions, func: Callable, bound: inspect.BoundArguments, args, kwargs) -> str:
    if callable(options.key):
        raw = options.key(*args, **kwargs)
    else:
        names = dict(bound.arguments)
        for name, param in bound.signature.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                names.update(names.pop(name, {}))
        try:
            raw = options.key.format(**names)
        except (KeyError, AttributeError, IndexError) as exc:
            raise InvalidIdempotencyKey(
                f"key template {options.key!r} of {func.__qualname__} cannot be formatted: {exc!r}"
            ) from exc
    try:
        return validate_key(raw)
    except KeyFormatError as exc:
        raise InvalidIdempotencyKey(f"idempotency key of {func.__qualname__} is invalid: {exc}") from exc


def _call(func: Callable, options: FunctionOptions, key: str, fingerprint: str, args, kwargs) -> Any:
    from . import services
    from .settings import idempotency_settings

    using = options.using or services.database_alias()
    ttl = options.ttl or as_timedelta(idempotency_settings.DEFAULT_TTL, name="DEFAULT_TTL")
    lease = options.lease_seconds or idempotency_settings.LEASE_SECONDS
    deadline = time.monotonic() + options.wait
    pause = _WAIT_FIRST
    while True:
        claim = services.record_claim(
            scope=options.scope, key=key, fingerprint=fingerprint, ttl=ttl, lease_seconds=lease, using=using
        )
        if claim.outcome == services.REPLAY:
            return claim.record.result
        if claim.outcome == services.MISMATCH:
            raise IdempotencyKeyMismatch(scope=options.scope, key=key)
        if claim.outcome == services.CLAIMED:
            return _run_claimed(func, options, claim, args, kwargs, ttl=ttl, lease=lease, using=using)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IdempotencyInProgress(scope=options.scope, key=key, retry_after=claim.retry_after)
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _WAIT_MAX)


def _run_claimed(
    func: Callable, options: FunctionOptions, claim, args, kwargs, *, ttl: timedelta, lease: float, using: str
) -> Any:
    from . import services
    from .leases import lease_keeper
    from .settings import idempotency_settings

    record, token = claim.record, claim.token
    handle = None
    if not connections[using].in_atomic_block:
        # Only a committed claim can be renewed (or taken over) from another connection.
        handle = lease_keeper.register(
            record_id=record.pk, token=token, lease_seconds=lease, using=using, scope=record.scope, key=record.key
        )

    def complete(result: Any, in_transaction: bool) -> None:
        encoded = _encode_result(func, result)
        limit = idempotency_settings.MAX_RESPONSE_BYTES
        if len(encoded) > limit:
            raise ValueError(
                f"{func.__module__}.{func.__qualname__} returned {len(encoded)} bytes of JSON, more than "
                f"MAX_RESPONSE_BYTES={limit}: not stored, and its key released (its database writes roll back)"
            )
        services.record_complete(record=record, token=token, ttl=ttl, result=result, using=using)

    try:
        result = run_then_complete(lambda: func(*args, **kwargs), complete, using=using, atomic=options.atomic)
    except BaseException:
        try:
            services.record_release(record=record, token=token, using=using)
        except Exception:
            logger.exception(
                "idempotency: could not release key scope=%s key=%s token=%s", record.scope, record.key, token
            )
        raise
    finally:
        if handle is not None:
            lease_keeper.unregister(handle)
    return result


def _encode_result(func: Callable, result: Any) -> str:
    try:
        return json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{func.__module__}.{func.__qualname__} returned a {type(result).__name__} that is not "
            f"JSON-serialisable, so @idempotent cannot store it ({exc}); return plain JSON types"
        ) from exc


def idempotent_view(
    view: Callable | None = None,
    *,
    required: bool | None = None,
    ttl: timedelta | float | None = None,
    methods: list[str] | tuple[str, ...] | None = None,
    allow_anonymous: bool | None = None,
    atomic: bool = True,
) -> Callable:
    """Honour the Idempotency-Key header on this view (``@idempotent_view`` or ``@idempotent_view(...)``).

    ``required`` refuses requests without the header (400); ``ttl`` is how long the response is
    replayed; ``methods`` and ``allow_anonymous`` override the settings for this view. Works with
    or without ``IdempotencyMiddleware`` installed.
    """
    from .http import ViewOptions

    if ttl is not None:
        ttl = as_timedelta(ttl, name="ttl")
    if methods is not None:
        methods = tuple(m.upper() for m in methods)
    options = ViewOptions(required=required, ttl=ttl, methods=methods, allow_anonymous=allow_anonymous, atomic=atomic)

    def decorate(func: Callable) -> Callable:
        if inspect.iscoroutinefunction(func):
            raise TypeError(f"@idempotent_view does not support async views ({func.__qualname__})")

        @functools.wraps(func)
        def wrapper(request, *args: Any, **kwargs: Any):
            from .http import handle_request

            return handle_request(request, lambda: func(request, *args, **kwargs), options)

        wrapper.idempotency_options = options  # type: ignore[attr-defined]
        return wrapper

    return decorate(view) if view is not None else decorate
