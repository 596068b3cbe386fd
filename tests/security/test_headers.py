"""Security headers on the dashboard and the admin: a strict CSP that their pages actually satisfy."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from tests.cluster.factories import active_node

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy")
    assert header, "every page carries a Content-Security-Policy"
    parsed = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


class InlineFinder(HTMLParser):
    """Collects what a script-src/style-src of 'self' would block: inline scripts, style elements and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style> element")
        if "style" in names:
            self.found.append(f"style attribute on <{tag}>")
        self.found += [f"{name} handler on <{tag}>" for name in names if name.startswith("on")]
        if any((value or "").strip().lower().startswith("javascript:") for value in names.values()):
            self.found.append(f"javascript: URL on <{tag}>")


def inline_content(html: str) -> list[str]:
    finder = InlineFinder()
    finder.feed(html)
    return finder.found


DASHBOARD_PAGES = ["dashboard:overview", "dashboard:ring", "dashboard:jobs", "dashboard:locks", "dashboard:idempotency"]


@pytest.mark.parametrize("name", DASHBOARD_PAGES)
def test_dashboard_pages_have_a_strict_policy_and_nothing_inline(admin_client_, name):
    response = admin_client_.get(reverse(name))
    assert response.status_code == 200
    csp = directives(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"], "no 'unsafe-inline' anywhere"
    assert "'self'" in csp["connect-src"] and any(s.startswith("ws://") for s in csp["connect-src"]), (
        "the WebSocket is allowed (ws: in debug)"
    )
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert response["X-Frame-Options"] == "DENY"
    assert inline_content(response.content.decode()) == [], f"{name} has inline content the CSP would block"


def admin_pages(node_pk: int, entry_pk: int) -> list[str]:
    from django.contrib import admin

    urls = [reverse("admin:index"), reverse("admin:cluster_node_lookup") + "?key=k&n=2"]
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
    urls += [
        reverse("admin:cluster_node_change", args=[node_pk]),
        reverse("admin:monitoring_auditentry_change", args=[entry_pk]),
        reverse("admin:auth_user_add"),
        reverse("admin:password_change"),
    ]
    return urls


def test_admin_pages_have_nothing_inline_the_policy_would_block(admin_client_, superuser):
    from monitoring.audit import audit_record

    node = active_node("n1")
    entry = audit_record(action="node.drain", target="n1", actor=superuser, source="admin")
    for url in admin_pages(node.pk, entry.pk):
        response = admin_client_.get(url)
        assert response.status_code == 200, f"{url} answered {response.status_code}"
        assert directives(response)["style-src"] == ["'self'"]
        assert inline_content(response.content.decode()) == [], f"{url} has inline content the CSP would block"


def test_the_login_page_too(client):
    response = client.get(reverse("admin:login"))
    assert response.status_code == 200 and response["X-Frame-Options"] == "DENY"
    assert inline_content(response.content.decode()) == []
    assert re.search(r"form-action 'self'", response["Content-Security-Policy"])


def test_the_api_is_covered_as_well(client):
    response = client.get("/api/v1/openapi.json")
    assert "default-src 'self'" in response["Content-Security-Policy"]
