"""The sweeper on a fake clock: real database, real heartbeat store, verdicts applied as membership changes."""

from __future__ import annotations

import pytest

from cluster.models import Node
from cluster.selectors import current_ring
from monitoring.heartbeats import HeartbeatStoreUnavailable
from monitoring.services import heartbeat_record
from monitoring.sweeper import Sweeper
from tests.cluster.factories import active_node

pytestmark = pytest.mark.django_db

T0 = 1_800_000_000.0  # wall-clock seconds: beats carry received_at from time.time()


def state(name: str) -> str:
    return Node.objects.get(name=name).state


def beating(sweeper: Sweeper, names: list[str], start: float, end: float, *, incarnation: int = 1) -> float:
    """Beat every second for every node and sweep after each beat; returns the time reached."""
    t = start
    seq = int(start)
    while t < end:
        seq += 1
        for name in names:
            heartbeat_record(node=name, incarnation=incarnation, seq=seq, now=t)
        sweeper.sweep(t + 0.01)
        t += 1.0
    return t


def silence(sweeper: Sweeper, start: float, seconds: float) -> list[tuple[float, str, str, str]]:
    seen = []
    t = start
    while t < start + seconds:
        for v in sweeper.sweep(t):
            seen.append((round(t - start, 1), v.node, v.from_state, v.to_state))
        t += 1.0
    return seen


def test_silent_node_goes_suspect_then_dead_and_leaves_the_ring():
    active_node("a")
    active_node("b")
    sweeper = Sweeper()
    t = beating(sweeper, ["a", "b"], T0, T0 + 30)
    assert state("a") == state("b") == "active"
    # b keeps beating, a falls silent.
    seen = []
    for _ in range(15):
        heartbeat_record(node="b", incarnation=1, seq=int(t), now=t)
        for v in sweeper.sweep(t + 0.01):
            seen.append((v.node, v.to_state))
        t += 1.0
    assert ("a", "suspect") in seen and ("a", "dead") in seen
    assert seen.index(("a", "suspect")) < seen.index(("a", "dead"))
    assert all(node == "a" for node, _ in seen), "the beating node is never suspected"
    assert state("a") == "dead" and state("b") == "active"
    assert current_ring().nodes == ("b",), "a dead node leaves the ring"


def test_suspect_refuted_by_a_fresh_beat():
    active_node("a")
    sweeper = Sweeper()
    t = beating(sweeper, ["a"], T0, T0 + 30)
    for _ in range(6):
        sweeper.sweep(t)
        t += 1.0
        if state("a") == "suspect":
            break
    assert state("a") == "suspect"
    beating(sweeper, ["a"], t, t + 2)
    assert state("a") == "active", "a fresh beat refutes the suspicion"


def test_late_sweep_convicts_nobody():
    active_node("a")
    sweeper = Sweeper()
    t = beating(sweeper, ["a"], T0, T0 + 30)
    verdicts = sweeper.sweep(t + 60)  # the sweeper itself was paused for a minute
    assert verdicts == []
    assert state("a") == "active"


class FlakyStore:
    """Wraps the configured store; `down` makes it fail like a stopped Redis would."""

    def __init__(self, inner):
        self.inner, self.down = inner, False

    def latest(self, nodes):
        if self.down:
            raise HeartbeatStoreUnavailable("store stopped by the test")
        return self.inner.latest(nodes)

    def record(self, node, beat):
        self.inner.record(node, beat)

    def forget(self, node):
        self.inner.forget(node)


def test_store_outage_convicts_nobody_during_and_for_a_grace_period():
    from monitoring.heartbeats import get_store

    active_node("a")
    store = FlakyStore(get_store())
    sweeper = Sweeper(store=store)
    t = beating(sweeper, ["a"], T0, T0 + 30)
    store.down = True
    for _ in range(20):
        assert sweeper.sweep(t) == []
        t += 1.0
    store.down = False
    heartbeat_record(node="a", incarnation=1, seq=10_000, now=t)
    for _ in range(5):  # within the 10 s grace period
        sweeper.sweep(t)
        t += 1.0
    assert state("a") == "active", "no conviction right after our own outage"


def test_dead_node_rejoins_with_a_new_incarnation_then_activates():
    active_node("a")
    sweeper = Sweeper()
    t = beating(sweeper, ["a"], T0, T0 + 30)
    t += 20
    silence(sweeper, t - 20, 20)
    assert state("a") == "dead"
    t = beating(sweeper, ["a"], t, t + 3, incarnation=1)
    assert state("a") == "dead", "the convicted incarnation may never come back"
    t = beating(sweeper, ["a"], t, t + 15, incarnation=2)
    node = Node.objects.get(name="a")
    assert node.incarnation == 2
    assert node.state == "active"
    assert current_ring().nodes == ("a",)


def test_sweeper_refreshes_last_heartbeat_at_every_few_seconds():
    active_node("a")
    sweeper = Sweeper()
    beating(sweeper, ["a"], T0, T0 + 3)
    node = Node.objects.get(name="a")
    assert node.last_heartbeat_at is not None
    assert abs(node.last_heartbeat_at.timestamp() - T0) < 1.5


def test_external_node_restart_with_a_new_incarnation_is_convicted_then_rejoins():
    """The old process's work is lost on a restart: the node goes dead (moving its work), then rejoins."""
    from cluster.models import MembershipEvent

    active_node("a")
    sweeper = Sweeper()
    t = beating(sweeper, ["a"], T0, T0 + 10)
    t = beating(sweeper, ["a"], t, t + 15, incarnation=2)
    node = Node.objects.get(name="a")
    assert (node.state, node.incarnation) == ("active", 2)
    steps = list(MembershipEvent.objects.filter(node=node).order_by("id").values_list("to_state", flat=True))
    assert steps == ["joining", "active", "suspect", "dead", "joining", "active"]


def test_worker_restart_recorded_in_the_database_is_not_a_conviction():
    from cluster import services

    active_node("a")
    sweeper = Sweeper()
    t = beating(sweeper, ["a"], T0, T0 + 10)
    services.node_restart(node="a", incarnation=2)
    beating(sweeper, ["a"], t, t + 10, incarnation=2)
    assert Node.objects.get(name="a").state == "active"


def test_a_sweep_longer_than_the_lease_keeps_the_sweeper_lock(monkeypatch):
    """A sweep that hands over many jobs can outlast the lease: the lock is extended between its steps."""
    import time

    from locks import get_backend
    from monitoring import sweeper as sweeper_module

    for name in ("a", "b", "c"):
        active_node(name)
    sweeper = Sweeper()
    t = beating(sweeper, ["a", "b", "c"], T0, T0 + 30)
    backend = get_backend("db")
    lease = backend.acquire("test:sweeper", ttl=1.0, blocking=False)
    keeper = sweeper_module._LeaseKeeper(backend, lease)
    keeper.ttl = 1.0
    sweeper.keep_alive = keeper.keep_alive
    apply = sweeper._apply

    def slow_apply(verdict, beat):  # as a conviction that hands over a thousand jobs under load
        time.sleep(0.4)
        apply(verdict, beat)

    monkeypatch.setattr(sweeper, "_apply", slow_apply)
    longest = 0.0
    for second in range(1, 15):  # all three fall silent: they are suspected, then convicted, together
        started = time.monotonic()
        verdicts = sweeper.sweep(t + second)
        if verdicts:
            longest = max(longest, time.monotonic() - started)
            assert len(verdicts) == 3, verdicts
    assert longest > 1.0, "a sweep must outlast the 1 s lease for this test to mean anything"
    lease.ensure_held()  # raises LockLost if the lease ran out mid-sweep
    assert backend.release(lease) is True
