"""``receive()`` on normal channels: a consumer group read in the default team.

Every process that receives from a normal channel reads the same stream
through one consumer group, so each message goes to one of them. Reads of
one channel within one event loop take turns (a lock), so a read that was
interrupted can be resumed from the consumer's pending list without handing
the same entry to two callers.

An entry is acknowledged in the same round trip as the next read of its
channel, before anything newer is returned. This keeps delivery at most
once (nobody claims the default team's pending entries) at one round trip
per message instead of two.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from . import metrics
from .config import RECONNECT_MAX_S, RECONNECT_MIN_S, LayerConfig
from .connection import (
    NETWORK_ERRORS,
    ServerClock,
    ShardSet,
    raise_if_cancelling,
    stream_entries,
    translate,
)
from .exceptions import MalformedEntryError, StreamsLayerError
from .inbox import entry_ms, stream_gone
from .keys import KeySpace
from .scripts import CHAN_ACK, STREAM_OPEN
from .serializers import Message, MessageCodec

logger = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes] | None]


class ChannelReceiver:
    """Receives from normal channels on one event loop."""

    def __init__(  # noqa: PLR0913 - collaborators, passed once
        self,
        *,
        shards: ShardSet,
        keys: KeySpace,
        config: LayerConfig,
        codec: MessageCodec,
        consumer: str,
        clock: ServerClock,
    ) -> None:
        self._shards = shards
        self._keys = keys
        self._config = config
        self._codec = codec
        self._consumer = consumer
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._unacked: dict[str, list[bytes]] = {}
        self._resume: set[str] = set()
        self._opened: set[str] = set()

    def reset(self) -> None:
        """Forget streams and pending state (after ``flush``)."""
        self._unacked.clear()
        self._resume.clear()
        self._opened.clear()

    async def receive(self, channel: str) -> Message:
        """The next fresh message of ``channel`` for the default team."""
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            delay = RECONNECT_MIN_S
            while True:
                try:
                    entry = await self._read_one(channel)
                except (*NETWORK_ERRORS, StreamsLayerError) as exc:
                    raise_if_cancelling()
                    logger.warning("channel %s: read failed (%s); retrying", channel, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
                delay = RECONNECT_MIN_S
                if entry is None:
                    continue
                message = self._decode(channel, entry)
                if message is not None:
                    return message

    def _decode(self, channel: str, entry: Entry) -> Message | None:
        entry_id, fields = entry
        self._unacked.setdefault(channel, []).append(entry_id)
        expires_at = (entry_ms(entry_id) + self._config.expiry_ms) / 1000
        if fields is None or expires_at <= self._clock.now():
            metrics.record(metrics.EXPIRED, channel=channel)
            return None  # expired, or trimmed while pending
        payload = (fields or {}).get(b"m")
        if not isinstance(payload, bytes):
            logger.warning("channel %s: skipping malformed entry %r", channel, entry_id)
            return None
        try:
            return self._codec.decode(payload)
        except MalformedEntryError as exc:
            logger.warning("channel %s: skipping entry %r: %s", channel, entry_id, exc)
            return None

    async def _read_one(self, channel: str) -> Entry | None:
        key = self._keys.channel(channel)
        team = self._config.team
        if channel not in self._opened:
            batcher = self._shards.batcher(channel)
            server_ms = await batcher.script(STREAM_OPEN, [key], [team, self._config.key_ttl_s])
            self._clock.observe(int(server_ms))
            self._opened.add(channel)
        acks = self._unacked.pop(channel, [])
        resuming = channel in self._resume
        # Until this read returns, an entry may sit unseen in our pending list.
        self._resume.add(channel)
        commands: list[tuple[Any, ...]] = []
        if acks:
            commands.append(("EVALSHA", CHAN_ACK.sha, 1, key, team, self._config.expiry_ms, *acks))
        read: tuple[Any, ...] = ("XREADGROUP", "GROUP", team, self._consumer, "COUNT", 1)
        if not resuming:
            read += ("BLOCK", self._config.block_ms)
        commands.append((*read, "STREAMS", key, "0" if resuming else ">"))
        try:
            replies = await self._shards.connections(channel).run(commands)
        except BaseException:
            self._unacked[channel] = acks + self._unacked.get(channel, [])
            raise
        if acks and isinstance(replies[0], Exception):
            # The acknowledgement did not happen: keep it for the next read.
            self._unacked[channel] = acks + self._unacked.get(channel, [])
            if isinstance(replies[0], NoScriptError):
                await self._shards.client(channel).script_load(CHAN_ACK.source)
            if resuming:
                # Our pending list still holds what was already returned.
                return None
        return self._entry_from(channel, replies[-1], resuming)

    def _entry_from(self, channel: str, reply: Any, resuming: bool) -> Entry | None:
        if isinstance(reply, ResponseError):
            if stream_gone(reply):
                self._opened.discard(channel)
                self._resume.discard(channel)
                return None
            # Translated, so receive() logs and retries (a key replaced by
            # another type answers WRONGTYPE until it is a stream again).
            raise translate(reply)
        if isinstance(reply, Exception):
            raise reply
        entries = stream_entries(reply)
        if not entries or not resuming:
            self._resume.discard(channel)
        if not entries:
            return None
        return entries[0]
