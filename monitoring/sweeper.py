"""The sweeper: feeds heartbeats to the liveness tracker and applies its verdicts to the cluster.

Only one sweeper acts at a time: ``run_sweeper`` holds a lock from the locks app (auto-renewed)
while it sweeps, and a second sweeper waits for that lock. The tracker's state (each node's
detector window) lives in the acting sweeper's memory; a new leader starts from the database's
states and learns the intervals again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from django.core.cache import cache
from django.db import close_old_connections

from cluster import services as cluster_services
from cluster.exceptions import IllegalTransition, UnknownNode
from cluster.models import Node, NodeState

from .heartbeats import BaseHeartbeatStore, Beat, HeartbeatStoreUnavailable, get_store
from .liveness import ACTIVE, DEAD, JOINING, SUSPECT, LivenessPolicy, LivenessTracker, Verdict
from .selectors import PHI_CACHE_KEY
from .settings import monitoring_settings

logger = logging.getLogger(__name__)

ACTOR = "sweeper"
# Draining nodes finish their work and leave on their own; left nodes are gone. Neither is judged.
TRACKED_STATES = {NodeState.JOINING, NodeState.ACTIVE, NodeState.SUSPECT, NodeState.DEAD}


def policy_from_settings() -> LivenessPolicy:
    return LivenessPolicy(**monitoring_settings.LIVENESS)


class Sweeper:
    """One sweep at a time: read beats, feed the tracker, apply the verdicts through cluster services."""

    def __init__(
        self,
        *,
        policy: LivenessPolicy | None = None,
        store: BaseHeartbeatStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tracker = LivenessTracker(policy or policy_from_settings())
        self.store = store or get_store()
        self.clock = clock
        self._seen: dict[str, tuple[int, int]] = {}  # node -> (incarnation, seq) of the last beat fed
        self._store_down = False
        self._last_db_refresh = 0.0

    def sweep(self, now: float | None = None) -> list[Verdict]:
        now = self.clock() if now is None else now
        nodes = {n.name: n for n in Node.objects.filter(state__in=TRACKED_STATES)}
        self._sync(nodes, now)
        try:
            beats = self.store.latest(nodes)
        except HeartbeatStoreUnavailable as exc:
            # Our own outage is not the nodes' death: convict nobody now and for a grace period after.
            if not self._store_down:
                logger.error("heartbeat store unavailable, convicting nobody: %s", exc)
            self._store_down = True
            self.tracker.hold(now + monitoring_settings.STORE_GRACE_PERIOD)
            return []
        if self._store_down:
            logger.warning("heartbeat store is back; grace period of %ss", monitoring_settings.STORE_GRACE_PERIOD)
            self._store_down = False
            self.tracker.hold(now + monitoring_settings.STORE_GRACE_PERIOD)
        for name, beat in beats.items():
            self._feed(name, beat)
        verdicts = self.tracker.sweep(now)
        for verdict in verdicts:
            self._apply(verdict, beats.get(verdict.node))
        self._publish_phi(now)
        self._refresh_db(beats, now)
        return verdicts

    def _sync(self, nodes: dict[str, Node], now: float) -> None:
        for name in list(self.tracker):
            node = nodes.get(name)
            if (
                node is None
                or self._tracker_state(node) != self.tracker.state(name)
                or node.incarnation > self.tracker.incarnation(name)
            ):
                # Changed by someone else (an operator, a worker leaving or restarting): start again
                # from the database.
                self.tracker.forget(name)
                self._seen.pop(name, None)
        for name, node in nodes.items():
            if name not in self.tracker:
                self.tracker.add(name, now, state=self._tracker_state(node), incarnation=node.incarnation)

    @staticmethod
    def _tracker_state(node: Node) -> str:
        return {NodeState.JOINING: JOINING, NodeState.ACTIVE: ACTIVE, NodeState.SUSPECT: SUSPECT}.get(node.state, DEAD)

    def _feed(self, name: str, beat: Beat) -> None:
        marker = (beat.incarnation, beat.seq)
        if self._seen.get(name) == marker:
            return
        self._seen[name] = marker
        try:
            self.tracker.heartbeat(name, beat.received_at, incarnation=beat.incarnation)
        except ValueError as exc:
            # Older than what the tracker already counts (e.g. the moment the node was added): stale news.
            logger.debug("ignored a heartbeat of %s: %s", name, exc)

    def _apply(self, verdict: Verdict, beat: Beat | None) -> None:
        reason = f"{verdict.reason} (phi {verdict.phi:.1f})"[:255]
        try:
            if verdict.to_state == SUSPECT:
                cluster_services.node_mark_suspect(node=verdict.node, actor=ACTOR, reason=reason)
            elif verdict.to_state == DEAD:
                if verdict.from_state == ACTIVE:
                    # A restarted process (new incarnation) is convicted at once; the membership
                    # state machine still goes through suspect, so record both steps.
                    cluster_services.node_mark_suspect(node=verdict.node, actor=ACTOR, reason=reason)
                cluster_services.node_mark_dead(node=verdict.node, actor=ACTOR, reason=reason)
            elif verdict.to_state == JOINING:
                incarnation = beat.incarnation if beat is not None else None
                cluster_services.node_rejoin(node=verdict.node, incarnation=incarnation, actor=ACTOR, reason=reason)
            elif verdict.to_state == ACTIVE:
                cluster_services.node_activate(node=verdict.node, actor=ACTOR, reason=reason)
            logger.info("%s: %s -> %s, %s", verdict.node, verdict.from_state, verdict.to_state, reason)
        except (IllegalTransition, UnknownNode, ValueError) as exc:
            # The database moved on (an operator acted): the next sweep resynchronises from it.
            logger.warning(
                "sweeper could not apply %s -> %s to %s: %s", verdict.from_state, verdict.to_state, verdict.node, exc
            )
            self.tracker.forget(verdict.node)

    def _publish_phi(self, now: float) -> None:
        phis = {name: round(self.tracker.phi(name, now), 3) for name in self.tracker}
        try:
            cache.set(PHI_CACHE_KEY, phis, timeout=60)
        except Exception:  # readers show no phi; detection itself goes on
            logger.warning("could not publish phi values", exc_info=True)

    def _refresh_db(self, beats: dict[str, Beat], now: float) -> None:
        if now - self._last_db_refresh < monitoring_settings.HEARTBEAT_DB_REFRESH:
            return
        self._last_db_refresh = now
        changed = []
        for node in Node.objects.filter(name__in=list(beats)):
            seen = datetime.fromtimestamp(beats[node.name].received_at, tz=UTC)
            if node.last_heartbeat_at is None or seen > node.last_heartbeat_at:
                node.last_heartbeat_at = seen
                changed.append(node)
        Node.objects.bulk_update(changed, ["last_heartbeat_at"], batch_size=500)


def run_sweeper(*, stop: threading.Event | None = None, lock_backend: str = "default") -> None:
    """Sweep forever (until ``stop`` is set) while holding the sweeper lock; wait for it otherwise."""
    from locks import LockLost, get_backend

    stop = stop or threading.Event()
    backend = get_backend(lock_backend)
    ttl = monitoring_settings.SWEEPER_LOCK_TTL
    while not stop.is_set():
        lease = backend.acquire(monitoring_settings.SWEEPER_LOCK, ttl=ttl, blocking=True, timeout=ttl)
        if lease is None:
            continue
        logger.info("this sweeper now acts (lock token %s)", lease.token)
        sweeper = Sweeper()
        last_extend = time.monotonic()
        try:
            while not stop.is_set():
                started = time.monotonic()
                close_old_connections()
                if started - last_extend >= ttl / 3:
                    if not backend.extend(lease, ttl):
                        raise LockLost(f"sweeper lock {monitoring_settings.SWEEPER_LOCK} token {lease.token}")
                    last_extend = started
                lease.ensure_held()
                sweeper.sweep()
                stop.wait(max(0.0, monitoring_settings.SWEEP_INTERVAL - (time.monotonic() - started)))
        except LockLost as exc:
            logger.error("sweeper lost its lock, stepping down: %s", exc)
        finally:
            backend.release(lease)
