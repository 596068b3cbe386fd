"""WebSocket URL routes (wired into config/asgi.py)."""

from django.urls import path

from .consumers import ClusterConsumer

websocket_urlpatterns = [
    path("ws/cluster/", ClusterConsumer.as_asgi()),
]
