"""WebSocket consumers: the dashboard's live stream of cluster events."""

from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

# Everything that should reach dashboards is sent to this group (see monitoring/events.py).
CLUSTER_GROUP = "cluster"

CLOSE_ANONYMOUS = 4401
CLOSE_FORBIDDEN = 4403


class ClusterConsumer(AsyncJsonWebsocketConsumer):
    """Streams cluster events to staff users; anonymous and non-staff users are turned away."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        # Accept first so the close code reaches the browser: a close before accept is a bare 403.
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_ANONYMOUS)
            return
        if not user.is_staff:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(CLUSTER_GROUP, self.channel_name)
        self.joined = True
        await self.send_json({"type": "hello", "user": user.get_username()})

    async def disconnect(self, code: int) -> None:
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(CLUSTER_GROUP, self.channel_name)

    async def cluster_event(self, message: dict) -> None:
        await self.send_json(message["event"])
