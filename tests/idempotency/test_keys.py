"""The pure core: parsing the Idempotency-Key header (RFC 8941 sf-string), keys, fingerprints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idempotency.keys import (
    KeyFormatError,
    arguments_fingerprint,
    bounded_scope,
    parse_key_header,
    request_fingerprint,
    validate_key,
)

printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=255)


def serialize(key: str) -> str:
    """RFC 8941 section 4.1.6: serialize a String."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(printable)
def test_every_valid_key_round_trips_through_the_header(key):
    assert parse_key_header(serialize(key)) == key


@given(st.text(max_size=300))
def test_parser_accepts_only_valid_keys_and_otherwise_raises_its_own_error(value):
    try:
        key = parse_key_header(value)
    except KeyFormatError:
        return
    assert validate_key(key) == key
    assert serialize(key) == value.strip(" "), "only the canonical serialization (plus spaces) parses"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "empty"),
        ('""', "empty"),
        ("abc", "double quotes"),
        ('"abc', "closing"),
        ('"a" ;p=1', "after its closing quote"),
        ('"a\\b"', "backslash"),
        ('"\u00e9"', "printable ASCII"),
        ('"' + "x" * 256 + '"', "at most 255"),
    ],
)
def test_each_malformed_header_names_its_rule(value, rule):
    with pytest.raises(KeyFormatError, match=rule):
        parse_key_header(value)


def test_fingerprints_separate_every_field():
    base = {"method": "POST", "path": "/a", "headers": [("Content-Type", "application/json")], "body": b"{}"}
    same = request_fingerprint(**base)
    assert request_fingerprint(**base) == same and len(same) == 64
    for change in (
        {"method": "PATCH"},
        {"path": "/a?x=1"},
        {"headers": [("Content-Type", "text/plain")]},
        {"body": b"{} "},
    ):
        assert request_fingerprint(**{**base, **change}) != same, change
    assert request_fingerprint(method="POST", path="/ab", headers=[], body=b"c") != request_fingerprint(
        method="POST", path="/a", headers=[], body=b"bc"
    ), "fields are length-prefixed, not concatenated"
    assert arguments_fingerprint('{"a":1}') != arguments_fingerprint('{"a":2}')


def test_bounded_scope_keeps_long_scopes_unique():
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert bounded_scope("short") == "short"
    assert len(bounded_scope(long_a)) == 255
    assert bounded_scope(long_a) != bounded_scope(long_b)
