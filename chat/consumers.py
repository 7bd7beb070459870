"""The chat consumer: translates between a room's websocket and the channel layer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    FrameError,
    StreamId,
    error_frame,
    gap_frame,
    message_frame,
    parse_client_frame,
    sent_frame,
)
from chat.ratelimit import TokenBucket
from chat.rooms import group_name
from streams_layer.exceptions import StreamsLayerError

if TYPE_CHECKING:
    from streams_layer import RedisStreamsChannelLayer

logger = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 50
DEFAULT_RATE_PER_S = 5.0
DEFAULT_BURST = 10
# Resuming pages through the history; the layer keeps a bounded history, so
# this only guards against a layer that ignores ``after``.
MAX_HISTORY_PAGES = 100
# Websocket close code "try again later".
UNAVAILABLE_CLOSE_CODE = 1013
# The membership is renewed this often, as a share of the layer's group_expiry.
RENEW_SHARE = 0.5
# How long leaving the group may take when a handler crashed.
LEAVE_TIMEOUT_S = 2.0


class ChatConsumer(AsyncWebsocketConsumer):
    """One websocket in one room.

    On connect the socket joins the room's group, then receives the recent
    history (or, with ``?after=<id>``, exactly the messages after that id).
    Live messages already delivered from the history are skipped by comparing
    stream IDs, so a message never arrives twice. The membership is renewed
    every half ``group_expiry`` while the socket is open (it would lapse
    after a day by default), and left when a handler crashes, since the
    consumer then gets no ``disconnect``.
    """

    room: str
    group: str
    bucket: TokenBucket
    max_message_bytes: int
    # Highest stream ID the client has (or was sent from the history) at
    # connect time; live messages at or below it are duplicates.
    delivered_up_to: StreamId | None
    _renewing: asyncio.Task[None] | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Run a handler; if it crashes, leave the room's group first.

        A crashed consumer gets no ``disconnect``: its membership would keep
        receiving the room's messages until ``group_expiry``.
        """
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise  # the normal end, after disconnect() left
        except Exception:
            await self._leave(timeout_s=LEAVE_TIMEOUT_S)
            raise

    @property
    def layer(self) -> RedisStreamsChannelLayer:
        """The channel layer, with the history extension."""
        return cast("RedisStreamsChannelLayer", self.channel_layer)

    async def connect(self) -> None:
        """Join the room, accept, and send the history the client is missing."""
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = group_name(self.room)
        self.bucket = TokenBucket(
            rate_per_s=float(getattr(settings, "CHAT_RATE_LIMIT_PER_SECOND", DEFAULT_RATE_PER_S)),
            burst=int(getattr(settings, "CHAT_RATE_LIMIT_BURST", DEFAULT_BURST)),
        )
        self.max_message_bytes = int(
            getattr(settings, "CHAT_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)
        )
        self.delivered_up_to = None
        # Join before reading the history: a message recorded in between is
        # then both in the history and queued live, and the live copy is
        # dropped below. Reading first could lose it.
        await self.layer.group_add(self.group, self.channel_name)
        self._renewing = asyncio.create_task(self._renew_membership())
        await self.accept()
        after, bad_after = self._requested_after()
        if bad_after:
            await self.send(
                text_data=error_frame("ignored invalid 'after'; sending recent history")
            )
        try:
            await self._send_history(after)
        except StreamsLayerError as exc:
            # The client reconnects and resumes from its last id once Redis is back.
            logger.warning("room %s: history unavailable: %s", self.room, exc)
            await self.send(text_data=error_frame("the room is unavailable; reconnect later"))
            await self.close(code=UNAVAILABLE_CLOSE_CODE)

    async def disconnect(self, code: int) -> None:
        """Leave the room's group (left to expire if Redis is unreachable)."""
        await self._leave()

    async def _leave(self, *, timeout_s: float | None = None) -> None:
        renewing, self._renewing = self._renewing, None
        if renewing is not None:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        if not hasattr(self, "group"):
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self.layer.group_discard(self.group, self.channel_name)
        except (StreamsLayerError, TimeoutError) as exc:
            # The membership lapses by itself after group_expiry.
            logger.warning("room %s: could not leave the group: %r", self.room, exc)

    async def _renew_membership(self) -> None:
        """``group_add`` again every half ``group_expiry`` while the socket is open."""
        period_s = self.layer.group_expiry * RENEW_SHARE
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.layer.group_add(self.group, self.channel_name)
            except StreamsLayerError as exc:
                logger.warning("room %s: could not renew the membership: %s", self.room, exc)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Validate a client frame and record it in the room."""
        try:
            frame = parse_client_frame(text_data, max_message_bytes=self.max_message_bytes)
        except FrameError as exc:
            await self.send(text_data=error_frame(str(exc), ref=exc.ref))
            return
        if not self.bucket.try_acquire():
            reason = "rate limit exceeded; message not sent"
            await self.send(text_data=error_frame(reason, ref=frame.ref))
            return
        try:
            await self.layer.group_send_recorded(
                self.group, {"type": "chat.message", "message": frame.message}
            )
        except StreamsLayerError as exc:
            logger.warning("room %s: message not recorded: %s", self.room, exc)
            reason = "the room is unavailable; message not sent"
            await self.send(text_data=error_frame(reason, ref=frame.ref))
            return
        if frame.ref is not None:
            await self.send(text_data=sent_frame(frame.ref))

    async def chat_message(self, event: dict[str, Any]) -> None:
        """Deliver a live room message unless the history already delivered it."""
        history_id = StreamId.parse(str(event["history_id"]))
        if self.delivered_up_to is not None and history_id <= self.delivered_up_to:
            return
        await self.send(text_data=message_frame(str(event["message"]), history_id))

    def _requested_after(self) -> tuple[StreamId | None, bool]:
        """The ``after`` query parameter, and whether it was present but invalid."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = query.get("after")
        if not values or not values[0]:
            return None, False
        try:
            return StreamId.parse(values[0]), False
        except ValueError:
            return None, True

    async def _send_history(self, after: StreamId | None) -> None:
        """Send the recent history, or everything after ``after``."""
        limit = int(getattr(settings, "CHAT_HISTORY_LIMIT", DEFAULT_HISTORY_LIMIT))
        self.delivered_up_to = after
        if after is None:
            history = await self.layer.group_history(self.group, limit=limit)
            await self._send_entries(history.messages)
            return
        cursor = after
        for _ in range(MAX_HISTORY_PAGES):
            history = await self.layer.group_history(self.group, after=str(cursor), limit=limit)
            if cursor == after and not history.complete:
                await self.send(text_data=gap_frame())
            await self._send_entries(history.messages)
            progressed = self.delivered_up_to is not None and self.delivered_up_to > cursor
            if len(history.messages) < limit or not progressed or self.delivered_up_to is None:
                return
            cursor = self.delivered_up_to

    async def _send_entries(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            history_id = StreamId.parse(str(entry["history_id"]))
            if self.delivered_up_to is not None and history_id <= self.delivered_up_to:
                continue
            await self.send(text_data=message_frame(str(entry.get("message", "")), history_id))
            self.delivered_up_to = history_id
