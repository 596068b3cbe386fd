"""Pure core: parse the Idempotency-Key header, validate keys and digest requests (no Django, no I/O).

The header is an RFC 8941 structured-field *String* (the IETF draft "The Idempotency-Key HTTP
Header Field", section 2): ``Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"``. A bare
token (Stripe's style) is not a String and is rejected, so a client learns at once that its
header will not be understood by every server that follows the draft.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import timedelta

MAX_KEY_LENGTH = 255


class KeyFormatError(ValueError):
    """An idempotency key, or the header carrying it, breaks a rule; the message names the rule."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is 1-255 printable ASCII characters, else raise ``KeyFormatError``."""
    if not isinstance(key, str):
        raise KeyFormatError(f"the key must be a str, got {type(key).__name__}")
    if not key:
        raise KeyFormatError("the key is empty; it must be 1-255 printable ASCII characters")
    if len(key) > MAX_KEY_LENGTH:
        raise KeyFormatError(f"the key is {len(key)} characters long; at most {MAX_KEY_LENGTH} are allowed")
    for position, char in enumerate(key):
        if not " " <= char <= "~":
            raise KeyFormatError(f"the key has a character that is not printable ASCII at position {position}")
    return key


def parse_key_header(value: str) -> str:
    """The key inside an ``Idempotency-Key`` header value (an RFC 8941 sf-string), validated.

    Leading and trailing spaces are allowed (RFC 8941 section 4.2 strips them); parameters and
    lists are not, since the draft defines neither.
    """
    text = value.strip(" ")
    if not text:
        raise KeyFormatError('the Idempotency-Key header is empty; send a quoted string such as "a1b2c3"')
    if text[0] != '"':
        raise KeyFormatError(
            'the Idempotency-Key header must be a structured-field string in double quotes, e.g. "a1b2"'
        )
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 1
            if index >= len(text) or text[index] not in '"\\':
                raise KeyFormatError('in the Idempotency-Key header a backslash may only escape " or \\')
            chars.append(text[index])
        elif char == '"':
            if index != len(text) - 1:
                raise KeyFormatError("the Idempotency-Key header has text after its closing quote")
            return validate_key("".join(chars))
        elif not " " <= char <= "~":
            raise KeyFormatError("the Idempotency-Key header has a character that is not printable ASCII")
        else:
            chars.append(char)
        index += 1
    raise KeyFormatError("the Idempotency-Key header has no closing double quote")


def _digest(parts: Iterable[bytes]) -> str:
    # Length-prefixing every part makes the encoding injective: ("ab", "c") and ("a", "bc") differ.
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def request_fingerprint(*, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes) -> str:
    """SHA-256 of the method, the path (with its query), the selected headers and the body."""
    parts = [b"http", method.upper().encode("ascii"), path.encode("utf-8")]
    for name, value in headers:
        parts += [name.lower().encode("latin-1"), value.encode("latin-1")]
    parts.append(body)
    return _digest(parts)


def arguments_fingerprint(canonical_arguments: str) -> str:
    """SHA-256 of a function call's arguments, already encoded canonically (sorted-keys JSON)."""
    return _digest([b"call", canonical_arguments.encode("utf-8")])


def bounded_scope(scope: str, max_length: int = 255) -> str:
    """``scope`` if it fits the column, else a prefix of it plus a digest of the whole (still unique)."""
    if len(scope) <= max_length:
        return scope
    digest = hashlib.sha256(scope.encode("utf-8")).hexdigest()[:32]
    return f"{scope[: max_length - len(digest) - 1]}#{digest}"


def as_timedelta(value: timedelta | float | int, *, name: str) -> timedelta:
    """A ttl given as a timedelta or a number of seconds, validated positive."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    else:
        raise TypeError(f"{name} must be a timedelta or a number of seconds, got {value!r}")
    if result <= timedelta(0):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return result
