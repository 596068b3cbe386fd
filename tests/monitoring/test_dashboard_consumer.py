"""The dashboard stream over a real channel layer: auth, snapshot, deltas, coalescing, and the actions."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, Permission

from cluster import services as cluster_services
from cluster.models import Node
from monitoring import consumers
from monitoring.consumers import CLOSE_ANONYMOUS, CLOSE_FORBIDDEN, CLOSE_TOO_BIG, CLUSTER_GROUP, ClusterConsumer
from monitoring.services import heartbeat_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def no_old_heartbeats():
    """The heartbeat store (Redis or the file cache) outlives a test's database: start each test empty."""
    from django.core.cache import cache

    cache.clear()


@pytest_asyncio.fixture(autouse=True)
async def close_thread_connections():
    """sync_to_async's shared thread keeps its database connection; close it so teardown can drop the DB."""
    yield
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch):
    """Tick five times a second so a test waits 0.2 s, not 1 s, for a table delta."""
    monkeypatch.setattr(consumers.LiveTables, "interval", 0.2)
    monkeypatch.setattr(consumers.LiveTables, "min_spacing", 0.05)


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, *, staff: bool = True, perms: tuple[str, ...] = ()):
        user = django_user_model.objects.create_user(username=username, password="pw-dash-12345", is_staff=staff)
        if perms:
            user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
        return django_user_model.objects.get(pk=user.pk)

    return sync_to_async(make)


async def connect(user, path: str = "/ws/cluster/") -> WebsocketCommunicator:
    comm = WebsocketCommunicator(ClusterConsumer.as_asgi(), path)
    comm.scope["user"] = user
    connected, _ = await comm.connect()
    assert connected, "the consumer accepts every connection (and closes the unwelcome with a code)"
    return comm


async def receive_until(comm: WebsocketCommunicator, predicate, timeout: float = 5.0) -> dict:
    """The first message matching predicate, skipping others (the stream carries several kinds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # receive_from() cancels the consumer when it times out: wait with receive_nothing() instead.
        if await comm.receive_nothing(timeout=0.05, interval=0.01):
            continue
        message = await comm.receive_json_from()
        if predicate(message):
            return message
    raise AssertionError(f"no matching message within {timeout}s")


async def drain_messages(comm: WebsocketCommunicator) -> list[dict]:
    """Every message queued now."""
    messages = []
    while not await comm.receive_nothing(timeout=0.01, interval=0.005):
        messages.append(await comm.receive_json_from())
    return messages


async def staff_stream(user, path: str = "/ws/cluster/") -> tuple[WebsocketCommunicator, dict]:
    comm = await connect(user, path)
    hello = await comm.receive_json_from(timeout=5)
    assert hello["type"] == "hello", "the first message greets the user"
    snapshot = await receive_until(comm, lambda m: m["type"] == "snapshot")
    return comm, snapshot


def node_changes(message: dict, name: str) -> list[dict]:
    return [row for row in message.get("nodes", {}).get("changed", []) if row["name"] == name]


def joined_active(name: str) -> None:
    cluster_services.node_join(name=name, zone="z1", actor="test")
    cluster_services.node_activate(node=name, actor="test")


# --- auth ------------------------------------------------------------------------------------


async def test_anonymous_is_rejected_with_4401():
    comm = await connect(AnonymousUser())
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": CLOSE_ANONYMOUS}
    await comm.disconnect()


async def test_non_staff_is_rejected_with_4403(make_user):
    comm = await connect(await make_user("plain", staff=False))
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}
    await comm.disconnect()


async def test_a_foreign_origin_is_refused_by_the_asgi_stack():
    from config.asgi import application

    comm = WebsocketCommunicator(application, "/ws/cluster/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await comm.connect()
    assert not connected, "AllowedHostsOriginValidator refuses a foreign Origin before the consumer runs"
    await comm.disconnect()


async def test_a_user_demoted_mid_connection_is_closed_on_the_next_message(make_user, django_user_model):
    user = await make_user("soon-demoted")
    comm, _ = await staff_stream(user)
    await sync_to_async(django_user_model.objects.filter(pk=user.pk).update)(is_staff=False)
    await comm.send_json_to({"action": "lookup", "key": "k"})
    close = await receive_until_close(comm)
    assert close == CLOSE_FORBIDDEN, "staff status is checked on the server for every message"


async def receive_until_close(comm: WebsocketCommunicator, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        output = await comm.receive_output(timeout=left)
        if output["type"] == "websocket.close":
            return output["code"]
    raise AssertionError("the connection was not closed")


# --- snapshot and deltas ---------------------------------------------------------------------


async def test_staff_gets_a_snapshot_of_nodes_ring_and_recent_events(make_user):
    await sync_to_async(joined_active)("n1")
    await sync_to_async(heartbeat_record)(node="n1", incarnation=1, seq=1)
    comm = await connect(await make_user("ops"))
    hello = await comm.receive_json_from(timeout=5)
    assert hello["type"] == "hello" and hello["user"] == "ops"
    history = await comm.receive_json_from(timeout=5)
    assert history["type"] == "events" and history["history"] is True
    assert [(e["node"], e["to_state"]) for e in history["events"]] == [("n1", "joining"), ("n1", "active")]
    snapshot = await comm.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    (row,) = snapshot["nodes"]
    assert (row["name"], row["state"], row["zone"], row["share"]) == ("n1", "active", "z1", 1.0)
    assert abs(row["beat"] - time.time()) < 5, "the snapshot carries the last heartbeat's time"
    assert snapshot["ring"]["epoch"] >= 1 and [n["name"] for n in snapshot["ring"]["nodes"]] == ["n1"]
    assert set(snapshot["ring"]["cells"]) == {0}, "every cell of a one-node ring is that node's"
    await comm.disconnect()


async def test_a_heartbeat_produces_a_node_delta(make_user):
    await sync_to_async(joined_active)("n1")
    comm, snapshot = await staff_stream(await make_user("ops"))
    assert snapshot["nodes"][0]["beat"] is None
    await sync_to_async(heartbeat_record)(node="n1", incarnation=1, seq=1, load={"loadavg_1m": 0.25})
    delta = await receive_until(comm, lambda m: m["type"] == "delta" and node_changes(m, "n1"))
    (patch,) = node_changes(delta, "n1")
    assert patch["beat"] is not None and patch["load"] == {"loadavg_1m": 0.25}
    assert "zone" not in patch, "a delta carries only the fields that changed"
    await comm.disconnect()


async def test_a_transition_produces_an_event_and_a_delta(make_user):
    await sync_to_async(joined_active)("n1")
    comm, _ = await staff_stream(await make_user("ops"))
    await sync_to_async(cluster_services.node_mark_suspect)(node="n1", actor="sweeper", reason="phi 6")
    # Either may come first: the table read is on its own clock, and a relay that last found nobody
    # listening sends its next events at its next look.
    events = delta = None
    while events is None or delta is None:
        message = await receive_until(
            comm,
            lambda m: (
                (m["type"] == "events" and not m.get("history")) or (m["type"] == "delta" and node_changes(m, "n1"))
            ),
        )
        if message["type"] == "events":
            events = message
        else:
            delta = message
    (event,) = events["events"]
    assert (event["kind"], event["node"], event["from_state"], event["to_state"]) == (
        "membership",
        "n1",
        "active",
        "suspect",
    )
    assert node_changes(delta, "n1")[0]["state"] == "suspect"
    await comm.disconnect()


async def test_a_ring_change_sends_the_new_ring_and_the_hand_over(make_user):
    await sync_to_async(joined_active)("n1")
    comm, snapshot = await staff_stream(await make_user("ops"))
    await sync_to_async(joined_active)("n2")
    delta = await receive_until(comm, lambda m: m["type"] == "delta" and "ring" in m)
    assert [n["name"] for n in delta["ring"]["nodes"]] == ["n1", "n2"]
    moves = delta["ring_moves"]
    assert moves["from_epoch"] == snapshot["ring"]["epoch"] and moves["to_epoch"] == delta["ring"]["epoch"]
    assert [(m["source"], m["target"]) for m in moves["moves"]] == [("n1", "n2")]
    assert moves["fraction"] == pytest.approx(0.5, abs=0.01)
    await comm.disconnect()


async def test_a_lock_change_produces_events_and_a_delta(make_user):
    from locks import get_backend

    comm, snapshot = await staff_stream(await make_user("ops"))
    # Only this test's lock matters: another test's lease may still be running out on a lock store.
    assert [row for row in snapshot["locks"] if row["name"] == "dash:test-lock"] == []
    backend = get_backend("default")
    lease = await sync_to_async(backend.acquire)("dash:test-lock", ttl=30)
    delta = await receive_until(comm, lambda m: m["type"] == "delta" and "locks" in m)
    (row,) = delta["locks"]["changed"]
    assert (row["name"], row["token"], row["owner"]) == ("dash:test-lock", lease.token, lease.owner)
    assert row["expires_at"] - time.time() == pytest.approx(30, abs=5)
    await sync_to_async(lease.release)()
    delta = await receive_until(comm, lambda m: m["type"] == "delta" and "locks" in m)
    assert delta["locks"]["removed"] == [row["id"]]
    events = await receive_until(
        comm, lambda m: m["type"] == "events" and any(e["kind"] == "lock_released" for e in m["events"])
    )
    kinds = [e["kind"] for e in events["events"]]
    assert "lock_released" in kinds
    await comm.disconnect()


# --- coalescing ------------------------------------------------------------------------------


@pytest.mark.services
async def test_a_consumer_left_idle_past_the_layers_blocking_wait_still_gets_events(make_user):
    # channels_redis waits for a message with a 5 s BZPOPMIN; a read timeout of 5 s (redis-py 8's
    # default) made the empty reply arrive too late and crashed every idle consumer.
    comm, _ = await staff_stream(await make_user("ops"))
    await asyncio.sleep(6.5)
    event = {"kind": "membership", "id": "after-idle", "node": "x", "from_state": "active", "to_state": "suspect"}
    await get_channel_layer().group_send(CLUSTER_GROUP, {"type": "cluster.event", "event": event})
    message = await receive_until(comm, lambda m: m["type"] == "events", timeout=5)
    assert [e["id"] for e in message["events"]] == ["after-idle"]
    await comm.disconnect()


async def test_a_burst_of_events_is_coalesced_into_few_messages(make_user):
    comm, _ = await staff_stream(await make_user("ops"))
    layer = get_channel_layer()
    started = time.monotonic()
    # In batches of 10, as relays send them: 300 single-event messages would overflow the Redis
    # layer's channel capacity (100 messages) whenever the consumer reads slower than this loop
    # sends, and the layer drops those without anyone counting them.
    for start in range(0, 300, 10):
        events = [
            {"kind": "membership", "id": f"burst-{i}", "node": f"x{i}", "from_state": "active", "to_state": "suspect"}
            for i in range(start, start + 10)
        ]
        await layer.group_send(CLUSTER_GROUP, {"type": "cluster.events", "events": events})
    received: list[int] = []
    dropped = batches = 0
    while len(received) + dropped < 300 and time.monotonic() - started < 15:
        message = await receive_until(comm, lambda m: m["type"] == "events", timeout=15)
        batches += 1
        assert len(message["events"]) <= consumers.EVENT_BATCH_LIMIT, "a batch is bounded"
        received.extend(int(e["id"].split("-")[1]) for e in message["events"])
        dropped += message.get("dropped", 0)
    elapsed = time.monotonic() - started
    assert len(received) + dropped == 300, "every event arrives or is counted as dropped (the tables correct it)"
    assert received == sorted(received), "events keep their order"
    # The first event goes at once, then at most one batch per EVENT_FLUSH_INTERVAL.
    assert batches <= elapsed / consumers.EVENT_FLUSH_INTERVAL + 2, f"{batches} batches in {elapsed:.2f}s"
    assert batches < 300 / 10, f"300 events took {batches} messages"
    await comm.disconnect()


async def test_many_nodes_heartbeating_reach_the_browser_as_one_delta_per_tick(make_user):
    names = [f"n{i:03d}" for i in range(200)]

    def register() -> None:
        for name in names:
            Node.objects.create(name=name, state="active")

    await sync_to_async(register)()
    comm, snapshot = await staff_stream(await make_user("ops"))
    assert len(snapshot["nodes"]) == 200

    def beat_all(seq: int) -> None:
        for name in names:
            heartbeat_record(node=name, incarnation=1, seq=seq)

    started = time.monotonic()
    messages: list[dict] = []
    for seq in range(1, 6):  # five rounds of 200 heartbeats, 0.2 s apart: 5,000 beats a second
        await sync_to_async(beat_all)(seq)
        await asyncio.sleep(0.2)
        messages.extend(await drain_messages(comm))
    elapsed = time.monotonic() - started
    deltas = [m for m in messages if m["type"] == "delta"]
    beaten = {row["name"] for m in deltas for row in m.get("nodes", {}).get("changed", []) if "beat" in row}
    assert beaten == set(names), "every node's heartbeat reached the client"
    per_second = len(messages) / elapsed
    # One delta per tick (0.2 s here, 1 s by default) whatever the number of heartbeats.
    assert per_second <= 1 / consumers.LiveTables.interval + 2, f"{len(messages)} messages in {elapsed:.1f}s"
    await comm.disconnect()


# --- actions ---------------------------------------------------------------------------------


async def test_lookup_returns_the_owner_and_preference_list(make_user):
    await sync_to_async(joined_active)("n1")
    await sync_to_async(joined_active)("n2")
    comm, _ = await staff_stream(await make_user("ops"))
    await comm.send_json_to({"action": "lookup", "key": "account:42", "n": 2, "id": "q1"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "q1")
    from cluster.selectors import current_ring

    ring = await sync_to_async(current_ring)()
    assert reply["type"] == "reply" and reply["owner"] == ring.get_node("account:42")
    assert reply["preference"] == ring.get_nodes("account:42", 2)
    assert reply["partition"] is not None and 0 <= reply["position"] < 1, "the key is placed on the circle"
    await comm.disconnect()


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"action": "reboot"}, "unknown-action"),
        ({"key": "k"}, "unknown-action"),
        (["lookup"], "invalid-message"),
        ({"action": "lookup", "key": ""}, "invalid-field"),
        ({"action": "lookup", "key": "k", "n": 0}, "invalid-field"),
        ({"action": "force_release", "backend": "nope", "name": "x"}, "invalid-field"),
        ({"action": "drain", "node": "bad name!"}, "invalid-field"),
        ({"action": "retry_job", "job": "not-a-uuid"}, "invalid-field"),
        ({"action": "retry_job"}, "invalid-field"),
        ({"action": "requeue_job", "job": 17}, "invalid-field"),
    ],
)
async def test_invalid_messages_get_an_error_naming_the_problem(make_user, message, error):
    comm, _ = await staff_stream(await make_user("ops"))
    await comm.send_to(text_data=json.dumps(message))
    reply = await receive_until(comm, lambda m: m["type"] in ("error", "reply"))
    assert reply["type"] == "error" and reply["error"] == error, reply
    await comm.disconnect()


async def test_invalid_json_is_an_error_and_an_oversized_frame_closes(make_user):
    comm, _ = await staff_stream(await make_user("ops"))
    await comm.send_to(text_data="{not json")
    reply = await receive_until(comm, lambda m: m["type"] == "error")
    assert reply["error"] == "invalid-json"
    await comm.send_to(text_data=json.dumps({"action": "lookup", "key": "k" * consumers.MAX_FRAME}))
    assert await receive_until_close(comm) == CLOSE_TOO_BIG


async def test_force_release_needs_the_permission(make_user):
    from locks import get_backend

    lease = await sync_to_async(get_backend("default").acquire)("dash:perm", ttl=30)
    comm, _ = await staff_stream(await make_user("viewer"))
    await comm.send_json_to({"action": "force_release", "backend": "default", "name": "dash:perm", "id": 1})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == 1)
    assert (reply["type"], reply["error"]) == ("error", "forbidden")
    held = await sync_to_async(get_backend("default").held)()
    assert [info.name for info in held] == ["dash:perm"], "the lock is untouched"
    await sync_to_async(lease.release)()
    await comm.disconnect()


async def test_force_release_breaks_the_lock_and_is_audited(make_user):
    from locks import get_backend
    from locks.models import LockAudit

    backend = get_backend("default")
    lease = await sync_to_async(backend.acquire)("dash:stuck", ttl=60)
    comm, _ = await staff_stream(await make_user("ops", perms=("force_release_locklease",)))
    await comm.send_json_to(
        {"action": "force_release", "backend": "default", "name": "dash:stuck", "token": lease.token, "id": 7}
    )
    reply = await receive_until(comm, lambda m: m.get("reply_to") == 7)
    assert reply["type"] == "reply" and reply["released"] is True, reply
    assert await sync_to_async(backend.held)() == []
    audit = await sync_to_async(lambda: list(LockAudit.objects.values_list("name", "token", "actor")))()
    assert audit == [("dash:stuck", lease.token, "ops")]
    delta = await receive_until(comm, lambda m: m["type"] == "delta" and m.get("locks", {}).get("removed"))
    assert [lock_id.split(":", 1)[1] for lock_id in delta["locks"]["removed"]] == ["dash:stuck"]
    await comm.disconnect()


async def test_drain_is_recorded_with_the_user_as_actor(make_user):
    from cluster.models import MembershipEvent

    await sync_to_async(joined_active)("n1")
    comm, _ = await staff_stream(await make_user("ops", perms=("drain_node",)))
    await comm.send_json_to({"action": "drain", "node": "n1", "id": "d"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "d")
    assert reply["type"] == "reply", reply
    last = await sync_to_async(
        lambda: MembershipEvent.objects.order_by("-id").values_list("to_state", "actor").first()
    )()
    assert last == ("draining", "ops")
    await comm.send_json_to({"action": "drain", "node": "n1", "id": "again"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "again")
    assert (reply["type"], reply["error"]) == ("error", "illegal-transition")
    await comm.disconnect()


async def test_idempotency_topic_adds_the_keys_to_the_snapshot(make_user):
    comm, snapshot = await staff_stream(await make_user("ops"), "/ws/cluster/?topics=idempotency")
    if snapshot.get("idempotency") is None:  # the first read may still be running for this topic
        delta = await receive_until(comm, lambda m: m["type"] == "delta" and "idempotency" in m)
        summary = delta["idempotency"]
    else:
        summary = snapshot["idempotency"]
    assert summary["totals"]["keys"] == 0 and summary["recent"] == []
    await comm.disconnect()


# --- jobs -------------------------------------------------------------------------------------


def make_job(*, state: str = "failed", owner_node: str = "", task_name: str = "tests.dash_job"):
    import uuid

    from cluster.jobs import announce
    from cluster.models import Job

    job = Job.objects.create(
        id=uuid.uuid4(), task_name=task_name, args={}, args_digest="x", state=state, owner_node=owner_node, attempts=1
    )
    announce(job)  # outside a transaction: the job event goes out at once
    return job


@pytest.fixture
def sent(monkeypatch):
    """Messages a retried or requeued job would publish (no broker in these tests)."""
    from cluster import jobs

    messages = []
    monkeypatch.setitem(jobs.PUBLISHERS, "tests.dash_job", lambda *args: messages.append(args))
    return messages


async def jobs_stream(user):
    comm, snapshot = await staff_stream(user, "/ws/cluster/?topics=jobs")
    if snapshot.get("jobs") is None:  # the first read may still be running for this topic
        delta = await receive_until(comm, lambda m: m["type"] == "delta" and "jobs" in m)
        return comm, delta["jobs"].get("changed", [])
    return comm, snapshot["jobs"]


async def test_jobs_topic_adds_the_recent_jobs_to_the_snapshot(make_user):
    job = await sync_to_async(make_job)()
    comm, rows = await jobs_stream(await make_user("ops"))
    assert [(row["id"], row["state"], row["task_name"]) for row in rows] == [(str(job.pk), "failed", "tests.dash_job")]
    await comm.disconnect()
    plain, snapshot = await staff_stream(await make_user("other"))
    assert "jobs" not in snapshot, "only pages asking for the topic get the jobs"
    await plain.disconnect()


async def test_a_new_job_produces_an_event_and_a_row_delta(make_user):
    comm, rows = await jobs_stream(await make_user("ops"))
    assert rows == []
    job = await sync_to_async(make_job)(state="queued", owner_node="n9")
    # Either may come first: a tick can read the new row before the relayed event's batch goes out.
    got: dict[str, dict] = {}
    while len(got) < 2:
        message = await receive_until(
            comm,
            lambda m: (
                (m["type"] == "events" and any(e["kind"] == "job" for e in m["events"]))
                or (m["type"] == "delta" and "jobs" in m)
            ),
        )
        got.setdefault(message["type"], message)
    [relayed] = [e for e in got["events"]["events"] if e["kind"] == "job"]
    assert (relayed["job_id"], relayed["state"], relayed["owner_node"]) == (str(job.pk), "queued", "n9")
    [row] = got["delta"]["jobs"]["changed"]
    assert (row["id"], row["state"], row["owner_node"], row["attempts"]) == (str(job.pk), "queued", "n9", 1)
    await comm.disconnect()


async def test_retry_job_needs_the_permission(make_user, sent):
    from cluster.models import Job

    job = await sync_to_async(make_job)()
    comm, _ = await jobs_stream(await make_user("viewer"))
    await comm.send_json_to({"action": "retry_job", "job": str(job.pk), "id": "r"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "r")
    assert (reply["type"], reply["error"]) == ("error", "forbidden")
    assert (await sync_to_async(Job.objects.get)(pk=job.pk)).state == "failed", "the job is untouched"
    assert sent == []
    await comm.disconnect()


async def test_retry_job_sends_a_failed_job_again_as_the_user(make_user, sent):
    import uuid

    from cluster.models import Job
    from monitoring.models import AuditEntry

    job = await sync_to_async(make_job)()
    comm, _ = await jobs_stream(await make_user("ops", perms=("retry_job",)))
    await comm.send_json_to({"action": "retry_job", "job": str(job.pk), "id": "r"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "r")
    assert reply["type"] == "reply" and reply["state"] == "requeued" and reply["job_id"] == str(job.pk), reply
    after = await sync_to_async(Job.objects.get)(pk=job.pk)
    assert (after.state, after.dispatch, after.error) == ("requeued", 2, "sent again by ops")
    assert [(job_id, dispatch) for job_id, dispatch, *_ in sent] == [(str(job.pk), 2)]
    audit = await sync_to_async(lambda: list(AuditEntry.objects.values_list("action", "target", "actor")))()
    assert audit == [("job.retry", str(job.pk), "ops")]

    def requeued(message: dict) -> bool:
        changed = message.get("jobs", {}).get("changed", []) if message["type"] == "delta" else []
        return any(row.get("state") == "requeued" for row in changed)

    delta = await receive_until(comm, requeued)
    assert delta["jobs"]["changed"][0]["id"] == str(job.pk)
    await comm.send_json_to({"action": "retry_job", "job": str(job.pk), "id": "again"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "again")
    assert (reply["type"], reply["error"]) == ("error", "illegal-transition"), "only failed jobs are retried"
    await comm.send_json_to({"action": "retry_job", "job": str(uuid.uuid4()), "id": "unknown"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "unknown")
    assert (reply["type"], reply["error"]) == ("error", "unknown-job")
    await comm.disconnect()


async def test_requeue_job_moves_an_open_job_off_a_gone_node(make_user, sent):
    from cluster.models import Job

    job = await sync_to_async(make_job)(state="running", owner_node="gone-node")
    comm, _ = await jobs_stream(await make_user("viewer", perms=("retry_job",)))
    await comm.send_json_to({"action": "requeue_job", "job": str(job.pk), "id": "q"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "q")
    assert (reply["type"], reply["error"]) == ("error", "forbidden"), "retry_job does not allow requeueing"
    await comm.disconnect()
    comm, _ = await jobs_stream(await make_user("ops", perms=("requeue_job",)))
    await comm.send_json_to({"action": "requeue_job", "job": str(job.pk), "id": "q"})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == "q")
    assert reply["type"] == "reply" and reply["state"] == "requeued", reply
    after = await sync_to_async(Job.objects.get)(pk=job.pk)
    assert (after.state, after.owner_node, after.dispatch) == ("requeued", "", 2), "no worker node: the shared queue"
    assert len(sent) == 1
    await comm.disconnect()


async def test_hello_names_the_job_permissions(make_user):
    comm = await connect(await make_user("ops", perms=("requeue_job",)))
    hello = await comm.receive_json_from(timeout=5)
    assert hello["permissions"]["requeue_job"] is True and hello["permissions"]["retry_job"] is False
    await comm.disconnect()


async def test_finished_jobs_feed_the_jobs_per_second_rate():
    import asyncio

    from monitoring.consumers import LiveTables

    tables = LiveTables(asyncio.get_running_loop())
    for i, state in enumerate(["queued", "running", "succeeded", "duplicate", "failed"]):
        tables.note_event({"id": f"e{i}", "kind": "job", "state": state})
    tables.note_event({"id": "e2", "kind": "job", "state": "succeeded"})  # another connection's copy
    tables.seq = 2  # past the first read, which has nothing to compare with
    point = tables._rate_point(tables._rate_since + 1.0)
    assert point["jobs"] == 3.0, "succeeded, duplicate and failed jobs count once each; open states do not"


async def test_events_unsent_while_nobody_listened_still_reach_a_dashboard_that_connects(make_user, monkeypatch):
    """The relay sends nothing while no dashboard listens; one that connects gets what is published next."""
    from django.core.cache import cache

    from monitoring import events

    monkeypatch.setattr(events, "LISTENING_RECHECK", 0.3)
    skipped = events._relay.skipped
    deadline = time.monotonic() + 5
    while events._relay.skipped == skipped:  # its last look (maybe from an earlier test) may still say "listening"
        assert time.monotonic() < deadline, "the relay never found that nobody listens"
        events.publish("job", {"job_id": "unwatched", "state": "succeeded"})
        await asyncio.sleep(0.05)
    comm, _ = await staff_stream(await make_user("ops"))
    assert await cache.aget(consumers.LISTENING_KEY) is not None, "a connected dashboard marks that it listens"
    events.publish("job", {"job_id": "watched", "task_name": "t", "state": "succeeded", "owner_node": "n1"})
    message = await receive_until(
        comm, lambda m: m["type"] == "events" and any(e.get("job_id") == "watched" for e in m["events"])
    )
    assert all(e.get("job_id") != "unwatched" for e in message["events"]), "events nobody listened to were not sent"
    await comm.disconnect()


async def test_a_batch_of_events_is_shown_from_the_moment_the_dashboard_connected(make_user):
    """Relays send batches; events published before this connection (a relay held them) are left out."""
    comm, _ = await staff_stream(await make_user("ops"))
    now = time.time()
    batch = [
        {"kind": "job", "id": "old", "at": now - 60, "job_id": "j-old", "state": "succeeded"},
        {"kind": "job", "id": "new", "at": now + 1, "job_id": "j-new", "state": "succeeded"},
        {"kind": "job", "id": "undated", "job_id": "j-undated", "state": "running"},
    ]
    await get_channel_layer().group_send(CLUSTER_GROUP, {"type": "cluster.events", "events": batch})
    message = await receive_until(comm, lambda m: m["type"] == "events" and not m.get("history"))
    assert [e["id"] for e in message["events"]] == ["new", "undated"], "the event older than the connection is left out"
    await comm.disconnect()
