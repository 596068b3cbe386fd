"""The deployment fallbacks work across real processes: channel layer, broker, worker."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from channels.layers import get_channel_layer

from tests.processes import worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SENDER = """
import asyncio, django, sys
django.setup()
from channels.layers import get_channel_layer

from tests.processes import worker
asyncio.run(get_channel_layer().group_send("cluster-test", {"type": "cluster.event", "event": {"n": int(sys.argv[1])}}))
"""


@pytest.mark.slow
def test_group_message_from_another_process_reaches_this_one():
    """What a Celery worker's event does on its way to a dashboard consumer, in either deployment."""
    layer = get_channel_layer()

    async def scenario() -> list[dict]:
        channel = await layer.new_channel()
        await layer.group_add("cluster-test", channel)
        for n in (1, 2):
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SENDER, str(n), cwd=ROOT)
            assert await proc.wait() == 0
        received = [await asyncio.wait_for(layer.receive(channel), 10) for _ in range(2)]
        await layer.group_discard("cluster-test", channel)
        return received

    received = asyncio.run(scenario())
    assert [m["event"]["n"] for m in received] == [1, 2], "messages arrive once each, in order"


@pytest.mark.embedded
def test_sqlite_layer_capacity_and_expiry(tmp_path):
    from channels.exceptions import ChannelFull

    from monitoring.layers import SQLiteChannelLayer

    layer = SQLiteChannelLayer(str(tmp_path / "layer.sqlite3"), capacity=2, expiry=1)

    async def scenario():
        await layer.send("c1", {"type": "x", "i": 1})
        await layer.send("c1", {"type": "x", "i": 2})
        with pytest.raises(ChannelFull):
            await layer.send("c1", {"type": "x", "i": 3})
        assert (await layer.receive("c1"))["i"] == 1
        await layer.send("c2", {"type": "old"})
        await asyncio.sleep(1.1)
        await layer.send("c2", {"type": "new"})
        return await asyncio.wait_for(layer.receive("c2"), 2)

    assert asyncio.run(scenario())["type"] == "new", "expired messages are never delivered"


@pytest.mark.embedded
def test_sqlite_layer_rejects_non_json(tmp_path):
    from monitoring.layers import SQLiteChannelLayer

    layer = SQLiteChannelLayer(str(tmp_path / "layer.sqlite3"))
    with pytest.raises(TypeError):
        asyncio.run(layer.send("c1", {"type": "x", "blob": object()}))


@pytest.mark.slow
def test_a_real_worker_runs_a_task_through_the_configured_broker():
    """Filesystem broker and file results in the embedded pass, Redis in the services pass."""
    from monitoring.tasks import ping

    with worker("t1", dict(os.environ)):
        started = time.monotonic()
        result = ping.delay()
        assert result.get(timeout=60)["pong"] is True
        assert time.monotonic() - started < 60
