"""The sweeper: feeds heartbeats to the liveness tracker and applies its verdicts to the cluster.

Only one sweeper acts at a time: ``run_sweeper`` holds a lock from the locks app while it sweeps
(extended every ttl/3, also between the steps of a long sweep), and a second sweeper waits for it.
The tracker's state (each node's detector window) lives in the acting sweeper's memory; a new
leader starts from the database's states and learns the intervals again. Every few seconds it
also sends again the jobs whose message was lost (``cluster.jobs.jobs_resend_stalled``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.core.cache import cache
from django.db import InterfaceError, OperationalError, close_old_connections

from cluster import services as cluster_services
from cluster.exceptions import IllegalTransition, UnknownNode
from cluster.jobs import jobs_hand_over_orphans, jobs_resend_stalled
from cluster.models import Node, NodeState
from cluster.selectors import current_ring
from cluster.settings import cluster_settings

from .heartbeats import BaseHeartbeatStore, Beat, HeartbeatStoreUnavailable, get_store
from .liveness import ACTIVE, DEAD, JOINING, SUSPECT, LivenessPolicy, LivenessTracker, Verdict
from .selectors import PHI_CACHE_KEY
from .settings import monitoring_settings

logger = logging.getLogger(__name__)

ACTOR = "sweeper"
# Draining nodes finish their work and leave on their own; left nodes are gone. Neither is judged.
TRACKED_STATES = {NodeState.JOINING, NodeState.ACTIVE, NodeState.SUSPECT, NodeState.DEAD}
# Seconds between two looks for jobs whose message was lost (cluster.jobs.jobs_resend_stalled).
RESEND_CHECK_INTERVAL = 5.0


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
        self._last_resend = 0.0
        # Called between the steps of a sweep by the acting sweeper to keep its lock (see _LeaseKeeper).
        self.keep_alive: Callable[[], None] = lambda: None

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
            self.keep_alive()  # a conviction hands over the node's jobs: it can take a while
            self._apply(verdict, beats.get(verdict.node))
        self.keep_alive()
        self._publish_phi(now)
        self._refresh_db(beats, now)
        self._resend_stalled_jobs(now)
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

    def _resend_stalled_jobs(self, now: float) -> None:
        # Here, after the heartbeat store answered: while Redis is down its broker is too, and
        # there is nothing to send to.
        if now - self._last_resend < RESEND_CHECK_INTERVAL:
            return
        self._last_resend = now
        try:
            jobs_resend_stalled(older_than=timedelta(seconds=cluster_settings.JOB_RESEND_AFTER))
            jobs_hand_over_orphans(ring=current_ring())
        except (OperationalError, InterfaceError):
            raise
        except Exception:  # the broker's own errors: the next pass tries again
            logger.warning("could not send stalled jobs again", exc_info=True)

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
    """Sweep forever (until ``stop`` is set) while holding the sweeper lock; wait for it otherwise.

    Outages of the services it uses never end the loop: a database error skips that sweep (the
    next one is late, so the pause guard convicts nobody), and an unreachable lock store keeps
    this sweeper acting only until its lease's local deadline, then makes it wait for the lock
    again with backoff. A sweeper that comes back to the lock after such an outage starts with the
    heartbeat store's grace period, since the store was most likely down too (they are one Redis
    in the real deployment).
    """
    from locks import LockBackendUnavailable, LockLost, get_backend

    stop = stop or threading.Event()
    backend = get_backend(lock_backend)
    ttl = monitoring_settings.SWEEPER_LOCK_TTL
    lock_name = monitoring_settings.SWEEPER_LOCK
    retry = 0.5
    after_outage = False
    while not stop.is_set():
        try:
            lease = backend.acquire(lock_name, ttl=ttl, blocking=True, timeout=ttl)
        except LockBackendUnavailable as exc:
            logger.warning("sweeper lock store unavailable, retrying in %.1fs: %s", retry, exc)
            after_outage = True
            stop.wait(retry)
            retry = min(retry * 2, ttl / 2)
            continue
        retry = 0.5
        if lease is None:
            continue
        logger.info("this sweeper now acts (lock token %s)", lease.token)
        sweeper = Sweeper()
        if after_outage:
            sweeper.tracker.hold(sweeper.clock() + monitoring_settings.STORE_GRACE_PERIOD)
            after_outage = False
        try:
            after_outage = _sweep_while_held(sweeper, backend, lease, stop)
        except LockLost as exc:
            logger.error("sweeper lost its lock, stepping down: %s", exc)
            after_outage = True  # most likely the lock store restarted and forgot the lease
        finally:
            try:
                backend.release(lease)
            except LockBackendUnavailable as exc:
                logger.warning("could not release the sweeper lock token %s (it expires): %s", lease.token, exc)


class _LeaseKeeper:
    """Extends the sweeper's lease every ttl/3: between sweeps, and between the steps of a long sweep.

    A sweep that hands over thousands of jobs can outlast the lease; extending only between sweeps
    lost the lock mid-sweep under load (a sweep then convicted nobody until the lock came back).
    """

    def __init__(self, backend, lease) -> None:
        self.backend, self.lease = backend, lease
        self.ttl = monitoring_settings.SWEEPER_LOCK_TTL
        self.last_extend = time.monotonic()
        self.store_failed = False

    def keep_alive(self) -> None:
        from locks import LockBackendUnavailable, LockLost

        now = time.monotonic()
        if now - self.last_extend >= self.ttl / 3:
            try:
                if not self.backend.extend(self.lease, self.ttl):
                    raise LockLost(
                        self.lease.name, self.lease.token, "an extension found it expired or held by another owner"
                    )
                self.last_extend = now
            except LockBackendUnavailable as exc:
                # The lease still holds until its local deadline; ensure_held() below says when not.
                if not self.store_failed:
                    logger.warning("could not extend the sweeper lock token %s: %s", self.lease.token, exc)
                self.store_failed = True
        self.lease.ensure_held()


def _sweep_while_held(sweeper: Sweeper, backend, lease, stop: threading.Event) -> bool:
    """Sweep until ``stop`` or until the lease is lost (``LockLost``); True if the lock store failed meanwhile."""
    keeper = _LeaseKeeper(backend, lease)
    sweeper.keep_alive = keeper.keep_alive
    db_failed = False
    while not stop.is_set():
        started = time.monotonic()
        close_old_connections()
        keeper.keep_alive()
        try:
            sweeper.sweep()
            if db_failed:
                logger.warning("the database is back: sweeping again")
                db_failed = False
        except (OperationalError, InterfaceError) as exc:
            # Nothing to decide without the membership table; the next sweep is late and convicts nobody.
            if not db_failed:
                logger.error("database unavailable, skipping sweeps until it is back: %s", exc)
            db_failed = True
        stop.wait(max(0.0, monitoring_settings.SWEEP_INTERVAL - (time.monotonic() - started)))
    return keeper.store_failed
