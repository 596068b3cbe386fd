"""The event relay: batches to the channel layer, and nothing sent while no dashboard listens."""

from __future__ import annotations

import time

import pytest

from monitoring import events
from monitoring.consumers import CLUSTER_GROUP


class FakeLayer:
    """Records what the relay sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def group_send(self, group: str, message: dict) -> None:
        self.sent.append((group, message))

    def events(self) -> list[dict]:
        return [event for _, message in self.sent for event in message["events"]]


@pytest.fixture
def relay(monkeypatch):
    """A relay of its own (not the process's), a fake layer, and a switch for "a dashboard listens"."""
    layer = FakeLayer()
    listening = {"now": False}
    looks: list[float] = []

    def dashboards_listening() -> bool:
        looks.append(time.monotonic())
        return listening["now"]

    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(events, "dashboards_listening", dashboards_listening)
    monkeypatch.setattr(events, "LISTENING_RECHECK", 0.3)
    return events._Relay(), layer, listening, looks


def wait_for(predicate, timeout: float = 10.0) -> None:  # generous: CI machines are shared
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_nothing_is_sent_while_no_dashboard_listens(relay):
    relay, layer, _, _ = relay
    for i in range(5):
        relay.put({"kind": "job", "id": f"e{i}"})
    wait_for(lambda: relay.skipped == 5)
    assert layer.sent == [], "no dashboard listens: no message reaches the channel layer"


def test_events_go_out_in_order_and_in_batches(relay):
    relay, layer, listening, _ = relay
    listening["now"] = True
    relay.put({"kind": "job", "id": "first"})  # the relay looks, finds a listener, sends it
    wait_for(lambda: len(layer.events()) == 1)
    for i in range(500):
        relay.put({"kind": "job", "id": f"e{i}"})
    wait_for(lambda: len(layer.events()) == 501)
    assert [e["id"] for e in layer.events()] == ["first"] + [f"e{i}" for i in range(500)], "every event, in order"
    assert {group for group, _ in layer.sent} == {CLUSTER_GROUP}
    assert {message["type"] for _, message in layer.sent} == {"cluster.events"}
    assert all(len(message["events"]) <= events.BATCH_LIMIT for _, message in layer.sent), "batches are bounded"
    assert len(layer.sent) < 501 / 10, f"501 events took {len(layer.sent)} messages: not batched"
    assert relay.skipped == 0


def test_an_event_published_after_a_dashboard_started_listening_reaches_it(relay):
    """The relay's last look said nobody listens; a dashboard connects; what is published next still arrives."""
    relay, layer, listening, looks = relay
    relay.put({"kind": "job", "id": "before"})
    wait_for(lambda: relay.skipped == 1)  # looked: nobody listens, and it trusts that look for a while
    listening["now"] = True  # a dashboard connects (it marks the cache key before joining the group)
    relay.put({"kind": "job", "id": "after"})
    wait_for(lambda: layer.events())
    assert [e["id"] for e in layer.events()] == ["after"], "held until the next look, then sent; 'before' was not"
    assert len(looks) == 2, f"one look per recheck interval, not per event ({len(looks)} looks)"


def test_the_dashboard_key_is_looked_up_at_most_once_per_interval_while_events_flow(relay):
    relay, layer, listening, looks = relay
    listening["now"] = True
    started = time.monotonic()
    while time.monotonic() - started < 0.9:
        relay.put({"kind": "job", "id": "x"})
        time.sleep(0.005)
    wait_for(lambda: relay.queue.unfinished_tasks == 0)
    assert len(looks) <= 0.9 / events.LISTENING_RECHECK + 2, f"{len(looks)} looks in 0.9 s"
    assert layer.events(), "events were sent"


def test_events_nobody_listens_to_wake_the_relay_once_per_look_not_once_per_event(relay, monkeypatch):
    relay, layer, _, looks = relay
    wakes = []
    drain = relay._drain

    def counting_drain(*, wait: bool):
        wakes.append(time.monotonic())
        return drain(wait=wait)

    monkeypatch.setattr(relay, "_drain", counting_drain)
    started = time.monotonic()
    published = 0
    while time.monotonic() - started < 0.9:
        relay.put({"kind": "job", "id": f"e{published}"})
        published += 1
        time.sleep(0.002)
    wait_for(lambda: relay.skipped == published)
    assert layer.sent == []
    assert published > 100
    assert len(wakes) <= len(looks) + 1, f"{published} events woke the relay {len(wakes)} times ({len(looks)} looks)"
