"""Membership changes: every write to the cluster's nodes, epochs and events goes through here.

Each change runs in one transaction that locks the single ``ClusterState`` row, so concurrent
changes from many processes are applied one after another: no epoch is skipped or reused, and the
node's state, the new ring and the ``MembershipEvent`` commit together or not at all. The
``membership_changed`` signal goes out after commit, so listeners never announce a rolled-back change.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from .exceptions import IllegalTransition, UnknownNode
from .jobs import jobs_hand_over
from .models import NODE_NAME_RE, TRANSITIONS, ClusterState, MembershipEvent, Node, NodeState, RingEpoch
from .ring import HashRing
from .selectors import ring_at
from .settings import cluster_settings
from .signals import membership_changed

DEFAULT_ZONE = "default"

# Given the current ring and the locked node (fields updated, state not yet), the new ring or None.
RingChange = Callable[[HashRing, Node], "HashRing | None"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def _check_weight(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"weight must be a finite number > 0, got {weight!r}")
    return float(weight)


def _lock_state() -> ClusterState:
    ClusterState.objects.get_or_create(pk=1)
    return ClusterState.objects.select_for_update().get(pk=1)


def _ring_add(ring: HashRing, node: Node) -> HashRing:
    return ring.add_node(node.name, weight=node.weight, zone=node.zone or DEFAULT_ZONE)


def _ring_remove(ring: HashRing, node: Node) -> HashRing:
    return ring.remove_node(node.name)


def _transition(
    *,
    node: Node | str,
    to_state: str,
    actor: str,
    reason: str,
    ring_change: RingChange | None = None,
    allow_same_state: bool = False,
    hand_over_jobs: str = "",
    **fields: Any,
) -> MembershipEvent:
    name = node.name if isinstance(node, Node) else node
    with transaction.atomic():
        state = _lock_state()
        try:
            locked = Node.objects.select_for_update().get(name=name)
        except Node.DoesNotExist:
            raise UnknownNode(name) from None
        from_state = locked.state
        if not (allow_same_state and from_state == to_state) and to_state not in TRANSITIONS[from_state]:
            raise IllegalTransition(name, from_state, to_state, TRANSITIONS[from_state])
        for field, value in fields.items():
            setattr(locked, field, value)
        ring = ring_change(ring_at(state.epoch), locked) if ring_change is not None else None
        if ring is not None:
            state.epoch += 1
            RingEpoch.objects.create(epoch=state.epoch, ring=ring.to_dict(), reason=f"{name}: {reason}"[:255])
            state.save(update_fields=["epoch"])
            RingEpoch.objects.filter(epoch__lte=state.epoch - cluster_settings.RING_HISTORY).delete()
        if from_state != to_state:
            locked.state = to_state
            locked.state_changed_at = timezone.now()
        locked.save()
        if hand_over_jobs:
            # In the same transaction as the change: the jobs move exactly when the node does.
            jobs_hand_over(
                node=name,
                ring=ring if ring is not None else ring_at(state.epoch),
                include_running=hand_over_jobs == "all",
                reason=f"node {name}: {reason}",
            )
        event = MembershipEvent.objects.create(
            node=locked,
            from_state=from_state,
            to_state=to_state,
            epoch=state.epoch,
            incarnation=locked.incarnation,
            reason=reason[:255],
            actor=actor[:150],
        )
        payload = {
            "node": name,
            "from_state": from_state,
            "to_state": to_state,
            "epoch": state.epoch,
            "incarnation": locked.incarnation,
            "reason": reason,
            "actor": actor,
            "ring_changed": ring is not None,
        }
        transaction.on_commit(lambda: membership_changed.send(sender=Node, **payload))
    if isinstance(node, Node):
        node.refresh_from_db()
    return event


def node_join(
    *,
    name: str,
    address: str = "",
    zone: str = "",
    weight: float = 1.0,
    metadata: dict | None = None,
    actor: str = "",
) -> tuple[Node, str]:
    """Register a new node in ``joining`` state; returns it with its API token (shown only now)."""
    if not isinstance(name, str) or not re.match(NODE_NAME_RE, name):
        raise ValueError(f"name must match {NODE_NAME_RE} (it names the node's queue), got {name!r}")
    weight = _check_weight(weight)
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    token, token_hash = _new_token()
    with transaction.atomic():
        state = _lock_state()
        if Node.objects.filter(name=name).exists():
            raise ValueError(f"a node named {name!r} exists already")
        node = Node.objects.create(
            name=name,
            address=address,
            zone=zone,
            weight=weight,
            metadata=metadata or {},
            state=NodeState.JOINING,
            token_hash=token_hash,
        )
        MembershipEvent.objects.create(
            node=node,
            from_state="",
            to_state=NodeState.JOINING,
            epoch=state.epoch,
            incarnation=node.incarnation,
            reason="joined",
            actor=actor[:150],
        )
        payload = {
            "node": name,
            "from_state": "",
            "to_state": NodeState.JOINING,
            "epoch": state.epoch,
            "incarnation": node.incarnation,
            "reason": "joined",
            "actor": actor,
            "ring_changed": False,
        }
        transaction.on_commit(lambda: membership_changed.send(sender=Node, **payload))
    return node, token


def node_activate(*, node: Node | str, actor: str = "", reason: str = "activated") -> MembershipEvent:
    """``joining -> active`` (the node takes its ranges) or ``suspect -> active`` (suspicion refuted)."""

    def change(ring: HashRing, locked: Node) -> HashRing | None:
        return _ring_add(ring, locked) if locked.state == NodeState.JOINING else None

    return _transition(node=node, to_state=NodeState.ACTIVE, actor=actor, reason=reason, ring_change=change)


def node_drain(*, node: Node | str, actor: str = "", reason: str = "drained") -> MembershipEvent:
    """``active -> draining``: the node's ranges move to the others; it finishes what it runs."""
    return _transition(
        node=node,
        to_state=NodeState.DRAINING,
        actor=actor,
        reason=reason,
        ring_change=_ring_remove,
        hand_over_jobs="queued",
    )


def node_leave(*, node: Node | str, actor: str = "", reason: str = "left") -> MembershipEvent:
    """``draining``, ``joining`` or ``dead`` ``-> left``: the node is gone for good (it may rejoin)."""
    return _transition(node=node, to_state=NodeState.LEFT, actor=actor, reason=reason)


def node_mark_suspect(*, node: Node | str, actor: str = "", reason: str = "suspected") -> MembershipEvent:
    """``active -> suspect``: the node keeps its ranges but routing gives it no new work."""
    return _transition(node=node, to_state=NodeState.SUSPECT, actor=actor, reason=reason)


def node_mark_dead(*, node: Node | str, actor: str = "", reason: str = "declared dead") -> MembershipEvent:
    """``suspect -> dead``: the node leaves the ring and its ranges go to the next owners."""
    return _transition(
        node=node, to_state=NodeState.DEAD, actor=actor, reason=reason, ring_change=_ring_remove, hand_over_jobs="all"
    )


def node_rejoin(
    *, node: Node | str, incarnation: int | None = None, actor: str = "", reason: str = "rejoined"
) -> MembershipEvent:
    """``dead`` or ``left -> joining`` with a new, higher incarnation (old heartbeats are then refused)."""
    current = _get(node)
    if incarnation is None:
        incarnation = current.incarnation + 1
    if isinstance(incarnation, bool) or not isinstance(incarnation, int) or incarnation <= current.incarnation:
        raise ValueError(f"incarnation must be an int above the current {current.incarnation}, got {incarnation!r}")
    return _transition(node=node, to_state=NodeState.JOINING, actor=actor, reason=reason, incarnation=incarnation)


def node_restart(*, node: Node | str, incarnation: int, actor: str = "") -> MembershipEvent:
    """A live node came back as a new process (a new incarnation) before anyone declared it dead."""
    current = _get(node)
    if isinstance(incarnation, bool) or not isinstance(incarnation, int) or incarnation <= current.incarnation:
        raise ValueError(f"incarnation must be an int above the current {current.incarnation}, got {incarnation!r}")
    return _transition(
        node=node,
        to_state=current.state,
        actor=actor,
        reason=f"restarted as incarnation {incarnation}",
        allow_same_state=True,
        hand_over_jobs="all",  # what the old process was running died with it
        incarnation=incarnation,
    )


def node_remove(*, node: Node | str, actor: str = "", reason: str = "removed") -> list[MembershipEvent]:
    """Take a node out of the cluster by its legal path: drain first when it is active, then leave."""
    current = _get(node)
    events = []
    if current.state == NodeState.ACTIVE:
        events.append(node_drain(node=node, actor=actor, reason=reason))
    events.append(node_leave(node=node, actor=actor, reason=reason))
    return events


def node_set_weight(*, node: Node | str, weight: float, actor: str = "") -> MembershipEvent:
    """Change a node's weight; when it is in the ring its share moves accordingly (a new epoch)."""
    weight = _check_weight(weight)
    current = _get(node)
    reason = f"weight {current.weight:g} -> {weight:g}"

    def change(ring: HashRing, locked: Node) -> HashRing | None:
        return ring.set_weight(locked.name, weight) if locked.in_ring else None

    return _transition(
        node=node,
        to_state=current.state,
        actor=actor,
        reason=reason,
        ring_change=change,
        allow_same_state=True,
        weight=weight,
    )


def node_rotate_token(*, node: Node | str) -> str:
    """Give the node a new API token; the old one stops working at once."""
    token, token_hash = _new_token()
    current = _get(node)
    current.token_hash = token_hash
    # save(), not update(): receivers of post_save (the heartbeat API's token cache) must hear of it.
    current.save(update_fields=["token_hash"])
    return token


def _get(node: Node | str) -> Node:
    name = node.name if isinstance(node, Node) else node
    try:
        return Node.objects.get(name=name)
    except Node.DoesNotExist:
        raise UnknownNode(name) from None
