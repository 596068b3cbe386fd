"""Prometheus metrics: cluster state read at scrape time, plus the counters other apps register.

Gauges about the cluster (nodes by state, phi, heartbeat age, ring epoch, transitions) are read
from the database and the heartbeat store when Prometheus scrapes, so every process serves the
same numbers. Counters that live in a process (heartbeats received here, the locks and idempotency
apps' counters on prometheus_client's default registry) are added as they are.
"""

from __future__ import annotations

import time

from django.db.models import Count
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cluster.models import MembershipEvent, NodeState
from cluster.selectors import current_epoch

from .selectors import node_overview

HEARTBEATS_RECEIVED = Counter(
    "ringmaster_heartbeats_received", "Heartbeats recorded by this process", ["path"], registry=REGISTRY
)


class ClusterCollector:
    def collect(self):
        rows = node_overview()
        by_state = GaugeMetricFamily("ringmaster_nodes", "Nodes by membership state", labels=["state"])
        for state in NodeState.values:
            by_state.add_metric([state], sum(1 for r in rows if r["state"] == state))
        yield by_state
        phi = GaugeMetricFamily("ringmaster_node_phi", "Phi of each node at the last sweep", labels=["node"])
        age = GaugeMetricFamily(
            "ringmaster_node_heartbeat_age_seconds", "Seconds since each node's last heartbeat", labels=["node"]
        )
        share = GaugeMetricFamily("ringmaster_node_key_share", "Fraction of the key space owned", labels=["node"])
        for row in rows:
            if row["phi"] is not None:
                phi.add_metric([row["name"]], row["phi"])
            if row["last_heartbeat_age"] is not None:
                age.add_metric([row["name"]], row["last_heartbeat_age"])
            share.add_metric([row["name"]], row["share"])
        yield phi
        yield age
        yield share
        yield GaugeMetricFamily("ringmaster_ring_epoch", "Current ring epoch", value=current_epoch())
        transitions = CounterMetricFamily(
            "ringmaster_membership_transitions", "Membership transitions by target state", labels=["to_state"]
        )
        for item in MembershipEvent.objects.values("to_state").annotate(n=Count("id")):
            transitions.add_metric([item["to_state"]], item["n"])
        yield transitions
        yield GaugeMetricFamily("ringmaster_scrape_timestamp_seconds", "When this scrape was served", value=time.time())


_cluster_registry = CollectorRegistry(auto_describe=False)
_cluster_registry.register(ClusterCollector())


def render() -> bytes:
    return generate_latest(_cluster_registry) + generate_latest(REGISTRY)
