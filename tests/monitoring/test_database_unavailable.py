"""While the database does not answer, the API and the dashboard say 503, never a 500 traceback."""

from __future__ import annotations

import pytest
from django.db import InterfaceError, OperationalError

pytestmark = pytest.mark.django_db


def refuse(*args, **kwargs):
    raise OperationalError('connection failed: connection to server at "10.0.0.5", port 5432 failed')


@pytest.mark.parametrize("error", [OperationalError, InterfaceError])
def test_the_api_answers_503_problem_json(staff_client, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error("connection already closed")

    monkeypatch.setattr("monitoring.api.current_ring", fail)
    response = staff_client.get("/api/v1/ring", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"]
    body = response.json()
    assert body["type"] == "urn:ringmaster:problem:database-unavailable" and body["status"] == 503
    assert "connection" not in body["detail"], "the driver's message (hosts, ports) stays in the log"


def test_the_dashboard_answers_a_plain_503_page(staff_client, monkeypatch):
    monkeypatch.setattr("monitoring.dashboard._page", refuse)
    response = staff_client.get("/dashboard/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert b"Service unavailable" in response.content and b"Traceback" not in response.content


def test_a_non_html_client_of_a_page_gets_problem_json(staff_client, monkeypatch):
    monkeypatch.setattr("monitoring.dashboard._page", refuse)
    response = staff_client.get("/dashboard/", HTTP_ACCEPT="*/*")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"


def test_other_errors_are_not_disguised_as_an_outage(staff_client, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr("monitoring.dashboard._page", bug)
    with pytest.raises(ValueError, match="a bug"):
        staff_client.get("/dashboard/", HTTP_ACCEPT="text/html")
