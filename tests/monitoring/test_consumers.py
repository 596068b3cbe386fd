"""The dashboard WebSocket: anonymous and non-staff refused, staff receives membership deltas."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from config.asgi import application
from monitoring.consumers import CLOSE_ANONYMOUS, CLOSE_FORBIDDEN, ClusterConsumer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def communicator(user) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(ClusterConsumer.as_asgi(), "/ws/cluster/")
    comm.scope["user"] = user
    return comm


async def test_anonymous_is_closed_with_its_own_code():
    comm = communicator(AnonymousUser())
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_output(timeout=2)) == {"type": "websocket.close", "code": CLOSE_ANONYMOUS}


async def test_non_staff_is_closed_with_another_code(django_user_model):
    from asgiref.sync import sync_to_async

    user = await sync_to_async(django_user_model.objects.create_user)(username="u", password="pw-u-12345")
    comm = communicator(user)
    await comm.connect()
    assert (await comm.receive_output(timeout=2)) == {"type": "websocket.close", "code": CLOSE_FORBIDDEN}


async def test_staff_receives_a_membership_delta(django_user_model):
    from asgiref.sync import sync_to_async

    from cluster import services

    user = await sync_to_async(django_user_model.objects.create_user)(
        username="s", password="pw-s-12345", is_staff=True
    )
    comm = communicator(user)
    connected, _ = await comm.connect()
    assert connected
    hello = await comm.receive_json_from(timeout=5)
    assert hello["type"] == "hello"
    await sync_to_async(services.node_join)(name="n1", actor="test")
    event = await comm.receive_json_from(timeout=5)
    assert event["kind"] == "membership"
    assert (event["node"], event["from_state"], event["to_state"]) == ("n1", "", "joining")
    await comm.disconnect()


async def test_origin_is_checked_by_the_asgi_stack():
    comm = WebsocketCommunicator(application, "/ws/cluster/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await comm.connect()
    assert not connected, "a foreign Origin is refused before the consumer runs"
