"""A group chat consumer written for channels_redis runs unchanged on streams_layer.

The consumer below is what a channels_redis user already has; the test runs it
through ``channels.testing.WebsocketCommunicator`` once per backend, and the
only difference between the runs is the ``BACKEND`` string.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import channel_layers, get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.urls import re_path

# Channels closes old database connections around every consumer message.
pytestmark = pytest.mark.django_db(transaction=True)

BACKENDS = [
    pytest.param(
        "channels_redis.core.RedisChannelLayer",
        marks=pytest.mark.standalone_only(reason="channels_redis cannot use a Redis Cluster"),
    ),
    "streams_layer.RedisStreamsChannelLayer",
]


class GroupChatConsumer(AsyncJsonWebsocketConsumer):
    """Joins the room's group on connect and broadcasts what it receives to it."""

    room_group: str

    async def connect(self) -> None:
        self.room_group = "chat_" + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.room_group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.room_group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send(
            self.room_group,
            {"type": "chat.message", "text": content["text"], "sender": self.channel_name},
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"], "mine": event["sender"] == self.channel_name})


application = URLRouter([re_path(r"^ws/chat/(?P<room>\w+)/$", GroupChatConsumer.as_asgi())])


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, redis_url: str, prefix: str
) -> AsyncIterator[str]:
    layers = {
        "default": {"BACKEND": request.param, "CONFIG": {"hosts": [redis_url], "prefix": prefix}}
    }
    with override_settings(CHANNEL_LAYERS=layers):
        try:
            yield request.param
        finally:
            layer = channel_layers.backends.get("default")
            if layer is not None:
                await layer.close_pools()


async def _connect(room: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws/chat/{room}/")
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def test_the_configured_backend_is_in_use(backend: str) -> None:
    assert type(get_channel_layer()).__name__ == backend.rsplit(".", maxsplit=1)[-1]


async def test_group_chat_consumer_runs_unchanged(backend: str) -> None:
    alice, bob, carol = await _connect("lobby"), await _connect("lobby"), await _connect("other")
    try:
        await alice.send_json_to({"text": "hello lobby"})
        assert await alice.receive_json_from(timeout=3) == {"text": "hello lobby", "mine": True}
        assert await bob.receive_json_from(timeout=3) == {"text": "hello lobby", "mine": False}
        assert await carol.receive_nothing(timeout=0.5)

        await carol.send_json_to({"text": "hello other"})
        assert await carol.receive_json_from(timeout=3) == {"text": "hello other", "mine": True}
        assert await alice.receive_nothing(timeout=0.3)
        assert await bob.receive_nothing(timeout=0.3)

        await bob.disconnect()
        await alice.send_json_to({"text": "bob left"})
        assert await alice.receive_json_from(timeout=3) == {"text": "bob left", "mine": True}
    finally:
        for communicator in (alice, carol):
            await communicator.disconnect()


async def test_many_messages_reach_every_member(backend: str) -> None:
    members = [await _connect("busy") for _ in range(3)]
    try:
        for n in range(30):
            await members[n % 3].send_json_to({"text": str(n)})
            await asyncio.sleep(0)
        for member in members:
            texts = [(await member.receive_json_from(timeout=3))["text"] for _ in range(30)]
            assert sorted(texts, key=int) == [str(n) for n in range(30)]
    finally:
        for member in members:
            await member.disconnect()
