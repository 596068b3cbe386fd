"""The dashboard: staff-only pages (server-rendered shells) and the reads and actions their live stream uses.

The pages render a frame; everything that moves arrives over the WebSocket (``consumers.py``), whose
snapshot and deltas are built here from the apps' selectors and public APIs. Functions here are
synchronous and touch the database: the consumer runs them in a thread.
"""

from __future__ import annotations

import base64
import logging
import sys
import time
from array import array
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from xxhash import xxh3_64_intdigest

from cluster import selectors as cluster_selectors
from cluster import services as cluster_services
from cluster.models import JobState
from cluster.ring import HashRing

from .audit import audit_record
from .selectors import node_overview

logger = logging.getLogger(__name__)

# The ring view draws this many cells around the circle (or one per partition on smaller rings).
RING_CELLS = 720
# Preference-list length the key lookup shows unless asked for another.
DEFAULT_REPLICAS = 3
RECENT_EVENTS = 50
RECENT_IDEMPOTENCY_KEYS = 50

# Permissions of the dashboard's actions, as the admin checks them for the same changes.
PERM_FORCE_RELEASE = "locks.force_release_locklease"
PERM_DRAIN = "cluster.drain_node"
PERM_RETRY_JOB = "cluster.retry_job"
PERM_REQUEUE_JOB = "cluster.requeue_job"
RECENT_JOBS = 100


# --- pages ----------------------------------------------------------------------------------------


def _admin_url(name: str) -> str | None:
    """The admin page ``name``, or None while its app registers no admin for it."""
    try:
        return reverse(f"admin:{name}")
    except NoReverseMatch:
        return None


def _page(request: HttpRequest, template: str, page: str, admin_links: list[tuple[str, str]], **context: Any):
    links = [(label, url) for label, name in admin_links if (url := _admin_url(name))]
    return render(request, template, {"page": page, "admin_links": links, **context})


@staff_member_required
def overview(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "dashboard/overview.html",
        "overview",
        [("Nodes", "cluster_node_changelist"), ("Membership events", "cluster_membershipevent_changelist")],
    )


@staff_member_required
def ring(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "dashboard/ring.html",
        "ring",
        [
            ("Nodes", "cluster_node_changelist"),
            ("Ring epochs", "cluster_ringepoch_changelist"),
            ("Key lookup", "cluster_node_lookup"),
        ],
    )


@staff_member_required
def locks(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "dashboard/locks.html",
        "locks",
        [("Held locks", "locks_locklease_changelist"), ("Lock audit log", "locks_lockaudit_changelist")],
        can_force_release=request.user.has_perm(PERM_FORCE_RELEASE),
    )


@staff_member_required
def idempotency(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "dashboard/idempotency.html",
        "idempotency",
        [("Idempotency records", "idempotency_idempotencyrecord_changelist")],
    )


@staff_member_required
def jobs(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "dashboard/jobs.html",
        "jobs",
        [("Jobs", "cluster_job_changelist")],
        can_retry=request.user.has_perm(PERM_RETRY_JOB),
        can_requeue=request.user.has_perm(PERM_REQUEUE_JOB),
        job_states=JobState.choices,
    )


# --- nodes ----------------------------------------------------------------------------------------


def node_rows(*, now: float | None = None) -> list[dict[str, Any]]:
    """Every node as the dashboard's table shows it; ``beat`` is the wall-clock time of its last heartbeat."""
    now = time.time() if now is None else now
    rows = []
    for row in node_overview():
        age = row["last_heartbeat_age"]
        phi = row["phi"]
        rows.append(
            {
                "name": row["name"],
                "address": row["address"],
                "zone": row["zone"],
                "weight": row["weight"],
                "state": row["state"],
                "incarnation": row["incarnation"],
                "share": round(row["share"], 6),
                # node_overview gives an age; the browser ticks it from this timestamp every second.
                "beat": None if age is None else round(now - age, 3),
                "phi": None if phi is None else round(phi, 1),
                "load": row["load"],
            }
        )
    return rows


def recent_events(*, limit: int = RECENT_EVENTS) -> list[dict[str, Any]]:
    """Recent membership events, oldest first, in the shape the relay publishes them."""
    events = [
        {
            "kind": "membership",
            "id": f"membership-{event.pk}",
            "at": event.created_at.timestamp(),
            "node": event.node.name,
            "from_state": event.from_state,
            "to_state": event.to_state,
            "epoch": event.epoch,
            "incarnation": event.incarnation,
            "reason": event.reason,
            "actor": event.actor,
        }
        for event in cluster_selectors.recent_events(limit=limit)
    ]
    events.reverse()
    return events


def node_drain(*, node: str, actor: Any) -> None:
    """Drain ``node`` on an operator's behalf (IllegalTransition or UnknownNode when it cannot be).

    ``actor`` is the user; the drain and its audit entry commit together.
    """
    with transaction.atomic():
        event = cluster_services.node_drain(node=node, actor=actor.get_username(), reason="drained from the dashboard")
        audit_record(
            action="node.drain",
            target=node,
            actor=actor,
            source="dashboard",
            detail=f"{event.from_state} -> {event.to_state} (epoch {event.epoch})",
        )


# --- the ring -------------------------------------------------------------------------------------


def _owner_table(ring: HashRing) -> tuple[list[str], array]:
    """The ring's node names and partition -> node index table, from its persisted form."""
    data = ring.to_dict()
    raw = base64.b64decode(data["owners"])
    if not data["nodes"]:
        return [], array("B")
    width = len(raw) // data["partitions"]
    table = array({1: "B", 2: "H", 4: "I"}[width])  # the widths to_dict() writes
    table.frombytes(raw)
    if sys.byteorder == "big":  # to_dict stores little-endian
        table.byteswap()
    return data["nodes"], table


def _cells(names: list[str], table: array, shares: list[float], count: int) -> list[int]:
    """Each of ``count`` equal arcs of the circle, given to one node so that arcs are proportional to shares.

    Every node gets its share of cells (largest remainder), preferring the cells where it owns the
    most partitions, so the picture keeps both the proportions and roughly where each node's keys are.
    """
    per_cell = len(table) // count
    quotas = [int(share * count) for share in shares]
    by_remainder = sorted(range(len(names)), key=lambda i: (int(shares[i] * count) - shares[i] * count, names[i]))
    for i in by_remainder[: count - sum(quotas)]:
        quotas[i] += 1
    candidates = []
    for cell in range(count):
        counts: dict[int, int] = {}
        for owner in table[cell * per_cell : (cell + 1) * per_cell]:
            counts[owner] = counts.get(owner, 0) + 1
        candidates.extend((-n, cell, owner) for owner, n in counts.items())
    candidates.sort()
    cells = [-1] * count
    for _, cell, owner in candidates:
        if cells[cell] < 0 and quotas[owner] > 0:
            cells[cell] = owner
            quotas[owner] -= 1
    leftover = iter(i for i, quota in enumerate(quotas) for _ in range(quota))
    return [owner if owner >= 0 else next(leftover) for owner in cells]


_ring_cache: dict[int, dict[str, Any]] = {}


def ring_payload(ring: HashRing) -> dict[str, Any]:
    """The ring as the ring view draws it: nodes with their shares, and which node each cell shows."""
    cached = _ring_cache.get(ring.epoch)
    if cached is not None and cached["nodes_key"] == ring.nodes:
        return cached["payload"]
    names, table = _owner_table(ring)
    shares = [ring.share(name) for name in names]
    count = min(RING_CELLS, ring.partitions)
    payload = {
        "epoch": ring.epoch,
        "partitions": ring.partitions,
        "nodes": [
            {"name": name, "weight": ring.weights[name], "zone": ring.zones.get(name, ""), "share": share}
            for name, share in zip(names, shares, strict=True)
        ],
        "cells": _cells(names, table, shares, count) if names else [],
    }
    if len(_ring_cache) > 8:
        _ring_cache.clear()
    _ring_cache[ring.epoch] = {"nodes_key": ring.nodes, "payload": payload}
    return payload


def ring_moves(before: HashRing, after: HashRing) -> dict[str, Any]:
    """What moved from one ring to the next: the hand-over the ring view animates."""
    plan = before.diff(after)
    return {
        "from_epoch": before.epoch,
        "to_epoch": after.epoch,
        "fraction": plan.fraction_moved,
        "moves": [{"source": m.source, "target": m.target, "fraction": m.fraction} for m in plan.moves],
    }


def key_lookup(*, key: str, n: int = DEFAULT_REPLICAS) -> dict[str, Any]:
    """Who owns ``key`` now, its preference list, and where it sits on the circle (LookupError: empty ring)."""
    ring = cluster_selectors.current_ring()
    owner = ring.get_node(key)
    preference = ring.get_nodes(key, n)
    names, table = _owner_table(ring)
    # The ring's partition of a key is the top log2(Q) bits of its xxh3-64 hash (HashRing.get_node);
    # the position is only drawn when this agrees with the ring, so a change there cannot mislead.
    digest = xxh3_64_intdigest(key.encode())
    partition = digest >> (64 - (ring.partitions.bit_length() - 1))
    agrees = partition < len(table) and names[table[partition]] == owner
    return {
        "key": key,
        "epoch": ring.epoch,
        "owner": owner,
        "preference": preference,
        "partition": partition if agrees else None,
        "position": digest / 2**64 if agrees else None,
    }


# --- locks ----------------------------------------------------------------------------------------


def _timestamp(value: datetime) -> float:
    return value.timestamp()


def held_locks() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Held locks across every store, and each store's status (an unreachable store is reported, not raised)."""
    from locks.selectors import backend_groups, held_lock_list

    held, errors = held_lock_list()
    stores = [{"alias": group[0], "aliases": list(group), "error": errors.get(group[0])} for group in backend_groups()]
    rows = [
        {
            "id": f"{lock.alias}:{lock.info.name}",
            "backend": lock.alias,
            "name": lock.info.name,
            "owner": lock.info.owner,
            "token": lock.info.token,
            "acquired_at": _timestamp(lock.info.acquired_at),
            "expires_at": _timestamp(lock.info.expires_at),
        }
        for lock in held
    ]
    return rows, stores


def lock_force_release(*, backend: str, name: str, token: int | None, actor: Any) -> bool:
    """Break a lock for an operator (audited by the locks app); False when it was not held (or not by ``token``)."""
    from locks.services import lock_force_release as force_release

    from .events import publish  # events imports the consumers, which import this module

    released = force_release(backend=backend, name=name, actor=actor, token=token, source="dashboard")
    if released:
        username = actor.get_username() if hasattr(actor, "get_username") else str(actor)
        publish("lock_force_released", {"name": name, "token": token, "backend": backend, "actor": username})
    return released


# --- idempotency ----------------------------------------------------------------------------------


def idempotency_summary(*, limit: int = RECENT_IDEMPOTENCY_KEYS) -> dict[str, Any]:
    """Recent idempotency keys with their state and replays, and the totals."""
    from django.db.models import Count, Q, Sum

    from idempotency.models import IdempotencyRecord

    State = IdempotencyRecord.State
    totals = IdempotencyRecord.objects.aggregate(
        keys=Count("id"),
        in_progress=Count("id", filter=Q(state=State.IN_PROGRESS)),
        completed=Count("id", filter=Q(state=State.COMPLETED)),
        replays=Sum("replay_count"),
    )
    totals["replays"] = totals["replays"] or 0
    recent = IdempotencyRecord.objects.order_by("-created_at", "-id").values(
        "id", "scope", "key", "state", "replay_count", "created_at", "completed_at", "response_status"
    )[:limit]
    return {
        "totals": totals,
        "recent": [
            {
                **row,
                "created_at": _timestamp(row["created_at"]),
                "completed_at": _timestamp(row["completed_at"]) if row["completed_at"] else None,
            }
            for row in recent
        ],
    }


# --- jobs ---------------------------------------------------------------------------------------


def job_rows(*, limit: int = RECENT_JOBS) -> list[dict[str, Any]]:
    """Recent and running jobs, newest first, as the jobs table shows them."""
    return cluster_selectors.recent_jobs(limit=limit)


def _job_action(*, job_id: str, actor: Any, action: str) -> dict[str, Any]:
    """Retry or requeue one job for an operator (Job.DoesNotExist, or ValueError when it cannot be)."""
    from cluster import jobs as cluster_jobs
    from cluster.models import Job

    apply = cluster_jobs.job_retry if action == "retry" else cluster_jobs.job_requeue
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        before = job.state
        job = apply(job=job, actor=actor.get_username())
        audit_record(
            action=f"job.{action}",
            target=str(job.pk),
            actor=actor,
            source="dashboard",
            detail=f"{before} -> {job.state} (dispatch {job.dispatch}, owner {job.owner_node or 'shared queue'})",
        )
    return {"job_id": str(job.pk), "state": job.state, "owner_node": job.owner_node, "dispatch": job.dispatch}


def job_retry(*, job_id: str, actor: Any) -> dict[str, Any]:
    return _job_action(job_id=job_id, actor=actor, action="retry")


def job_requeue(*, job_id: str, actor: Any) -> dict[str, Any]:
    return _job_action(job_id=job_id, actor=actor, action="requeue")


# --- the whole live state -------------------------------------------------------------------------


def live_state(*, prev_ring: HashRing | None, topics: Iterable[str] = (), announced_epoch: int = 0) -> dict[str, Any]:
    """Everything one tick of the dashboard stream needs, read in one go (runs in a thread).

    ``announced_epoch`` is the newest epoch an event told of: a ring change made in another process
    drops no cache here, so this process's cached ring is dropped when it is older than that.
    """
    now = time.time()
    ring = cluster_selectors.current_ring()
    if ring.epoch < announced_epoch:
        cluster_selectors.forget_cached_ring()
        ring = cluster_selectors.current_ring()
    state: dict[str, Any] = {"now": now, "nodes": node_rows(now=now), "ring": ring}
    state["locks"], state["lock_stores"] = held_locks()
    if prev_ring is None or prev_ring.epoch != ring.epoch or prev_ring.nodes != ring.nodes:
        state["ring_payload"] = ring_payload(ring)
        comparable = prev_ring is not None and prev_ring.partitions == ring.partitions
        state["ring_moves"] = ring_moves(prev_ring, ring) if comparable else None
    if "idempotency" in topics:
        state["idempotency"] = idempotency_summary()
    if "jobs" in topics:
        state["jobs"] = job_rows()
    return state
