"""Membership state machine, epochs, events, ring persistence and routing selectors."""

from __future__ import annotations

import pytest

from cluster import IllegalTransition, UnknownNode, services
from cluster.models import TRANSITIONS, MembershipEvent, Node, NodeState, RingEpoch
from cluster.selectors import current_epoch, current_ring, node_for_token, owner_of, owners_of
from cluster.signals import membership_changed
from tests.cluster.factories import active_node

pytestmark = pytest.mark.django_db

ALL_STATES = [s.value for s in NodeState]


def put_in_state(name: str, state: str) -> Node:
    """Walk a fresh node along legal transitions to ``state``."""
    node, _ = services.node_join(name=name, actor="t")
    paths = {
        "joining": [],
        "active": [services.node_activate],
        "suspect": [services.node_activate, services.node_mark_suspect],
        "dead": [services.node_activate, services.node_mark_suspect, services.node_mark_dead],
        "draining": [services.node_activate, services.node_drain],
        "left": [services.node_activate, services.node_drain, services.node_leave],
    }
    for step in paths[state]:
        step(node=node, actor="t")
    node.refresh_from_db()
    assert node.state == state
    return node


SERVICE_FOR = {
    "active": services.node_activate,
    "suspect": services.node_mark_suspect,
    "dead": services.node_mark_dead,
    "draining": services.node_drain,
    "left": services.node_leave,
    "joining": services.node_rejoin,
}


@pytest.mark.parametrize("from_state", ALL_STATES)
@pytest.mark.parametrize("to_state", ALL_STATES)
def test_every_transition_is_legal_or_refused_without_change(from_state, to_state):
    node = put_in_state("n1", from_state)
    events_before = MembershipEvent.objects.count()
    epoch_before = current_epoch()
    legal = to_state in TRANSITIONS[from_state]
    if legal:
        SERVICE_FOR[to_state](node=node, actor="t")
        node.refresh_from_db()
        assert node.state == to_state
        assert MembershipEvent.objects.count() == events_before + 1
        event = MembershipEvent.objects.latest("id")
        assert (event.from_state, event.to_state) == (from_state, to_state)
    else:
        with pytest.raises(IllegalTransition) as info:
            SERVICE_FOR[to_state](node=node, actor="t")
        assert from_state in str(info.value) and to_state in str(info.value)
        node.refresh_from_db()
        assert node.state == from_state, "an illegal transition changes nothing"
        assert MembershipEvent.objects.count() == events_before
        assert current_epoch() == epoch_before


def test_lifecycle_epochs_and_events():
    node, token = services.node_join(name="a", zone="z1", weight=2.0, actor="alice")
    assert node.state == "joining" and len(token) > 30
    assert current_epoch() == 0, "joining does not change the ring"
    services.node_activate(node=node, actor="alice")
    assert current_epoch() == 1
    assert current_ring().nodes == ("a",)
    services.node_mark_suspect(node=node, actor="sweeper", reason="phi 5.2")
    assert current_epoch() == 1, "a suspect keeps its ranges: no epoch"
    assert current_ring().nodes == ("a",)
    services.node_activate(node=node, actor="sweeper", reason="refuted")
    assert current_epoch() == 1
    services.node_mark_suspect(node=node, actor="sweeper")
    services.node_mark_dead(node=node, actor="sweeper")
    assert current_epoch() == 2 and len(current_ring()) == 0
    services.node_rejoin(node=node, actor="worker")
    node.refresh_from_db()
    assert node.state == "joining" and node.incarnation == 2
    events = list(MembershipEvent.objects.order_by("id").values_list("from_state", "to_state", "epoch", "actor"))
    assert events == [
        ("", "joining", 0, "alice"),
        ("joining", "active", 1, "alice"),
        ("active", "suspect", 1, "sweeper"),
        ("suspect", "active", 1, "sweeper"),
        ("active", "suspect", 1, "sweeper"),
        ("suspect", "dead", 2, "sweeper"),
        ("dead", "joining", 2, "worker"),
    ]
    assert set(RingEpoch.objects.values_list("epoch", flat=True)) == {1, 2}


def test_rejoin_needs_a_higher_incarnation():
    node = put_in_state("n", "dead")
    with pytest.raises(ValueError, match="incarnation"):
        services.node_rejoin(node=node, incarnation=1)
    services.node_rejoin(node=node, incarnation=7)
    node.refresh_from_db()
    assert node.incarnation == 7


def test_ring_follows_membership_and_weights():
    a = active_node("a", weight=1.0)
    active_node("b", weight=3.0)
    ring = current_ring()
    assert ring.nodes == ("a", "b")
    assert ring.share("b") == pytest.approx(0.75, abs=0.001)
    services.node_set_weight(node=a, weight=3.0, actor="t")
    assert current_ring().share("a") == pytest.approx(0.5, abs=0.001)
    assert current_epoch() == 3
    with pytest.raises(ValueError, match="weight"):
        services.node_set_weight(node=a, weight=0)
    with pytest.raises(ValueError, match="weight"):
        services.node_set_weight(node=a, weight=float("nan"))


def test_drain_moves_only_the_drained_nodes_keys():
    for name in ("a", "b", "c"):
        active_node(name)
    before = current_ring()
    keys = [f"key-{i}" for i in range(3000)]
    owners = {k: before.get_node(k) for k in keys}
    services.node_drain(node="b", actor="t")
    after = current_ring()
    for k in keys:
        if owners[k] != "b":
            assert after.get_node(k) == owners[k], "keys of unchanged nodes never move"
        else:
            assert after.get_node(k) in ("a", "c")


def test_selectors_route_keys():
    active_node("a", zone="z1")
    active_node("b", zone="z2")
    active_node("c", zone="z1")
    owner = owner_of("user:42")
    prefs = owners_of("user:42", 3)
    assert prefs[0] == owner and len(set(prefs)) == 3
    assert {prefs[0], prefs[1]} & {"b"}, "the two first replicas are in different zones"


def test_owner_of_on_empty_cluster_raises_lookup_error():
    with pytest.raises(LookupError):
        owner_of("k")


def test_ring_snapshot_is_read_by_a_fresh_process_cache(settings):
    from cluster import selectors

    active_node("a")
    active_node("b")
    ring = current_ring()
    selectors.forget_cached_ring()
    assert current_ring() == ring, "the persisted assignment round-trips exactly"


def test_join_validates_input():
    with pytest.raises(ValueError, match="name"):
        services.node_join(name="")
    with pytest.raises(ValueError, match="name"):
        services.node_join(name="has space")
    with pytest.raises(ValueError, match="name"):
        services.node_join(name=42)
    with pytest.raises(ValueError, match="weight"):
        services.node_join(name="ok", weight=-1)
    services.node_join(name="ok")
    with pytest.raises(ValueError, match="exists"):
        services.node_join(name="ok")
    with pytest.raises(UnknownNode):
        services.node_drain(node="ghost")


def test_tokens_are_hashed_and_rotate():
    node, token = services.node_join(name="n")
    assert token not in node.token_hash
    assert node_for_token(token) == node
    assert node_for_token(token + "x") is None
    new = services.node_rotate_token(node=node)
    node.refresh_from_db()
    assert node_for_token(new) == node
    assert node_for_token(token) is None, "the old token stops working at once"


@pytest.mark.django_db(transaction=True)
def test_signal_is_sent_after_commit_only():
    seen = []

    def listener(**kwargs):
        seen.append((kwargs["node"], kwargs["to_state"], kwargs["epoch"]))

    membership_changed.connect(listener, dispatch_uid="test-listener")
    try:
        from django.db import transaction

        node, _ = services.node_join(name="s")
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                services.node_activate(node=node)
                raise RuntimeError("rolled back")
        assert seen == [("s", "joining", 0)], "a rolled-back change is never announced"
        services.node_activate(node=node)
        assert seen[-1] == ("s", "active", 1)
    finally:
        membership_changed.disconnect(dispatch_uid="test-listener")


def test_current_ring_checks_the_epoch_at_most_once_per_interval(settings, django_assert_num_queries):
    from cluster import selectors

    active_node("a")
    settings.RINGMASTER = {"CLUSTER": {"RING_CHECK_INTERVAL": 60}}
    selectors.forget_cached_ring()
    current_ring()
    with django_assert_num_queries(0):
        for _ in range(100):
            current_ring()
