"""GET /metrics: Prometheus text with cluster gauges, protected by a token or loopback-only."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.services import heartbeat_record
from tests.cluster.factories import active_node

pytestmark = pytest.mark.django_db


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_report_cluster_state(client):
    active_node("a")
    active_node("b")
    heartbeat_record(node="a", incarnation=1, seq=1, path="http")
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    m = samples(response.content)
    assert m[("ringmaster_nodes", (("state", "active"),))] == 2
    assert m[("ringmaster_nodes", (("state", "dead"),))] == 0
    assert m[("ringmaster_ring_epoch", ())] == 2
    assert m[("ringmaster_node_key_share", (("node", "a"),))] == pytest.approx(0.5, abs=0.001)
    assert ("ringmaster_node_heartbeat_age_seconds", (("node", "a"),)) in m
    assert m[("ringmaster_membership_transitions_total", (("to_state", "active"),))] == 2
    assert m[("ringmaster_heartbeats_received_total", (("path", "http"),))] >= 1


def test_metrics_refuse_remote_clients_without_a_token(client):
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403


def test_metrics_token(client, settings):
    settings.RINGMASTER = {"MONITORING": {"METRICS_TOKEN": "s3cret-token"}}
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401, "with a token, loopback is not enough"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200


def test_staff_may_scrape(staff_client):
    assert staff_client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
