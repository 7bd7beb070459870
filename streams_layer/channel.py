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

Each event loop reads under a consumer name of its own (:class:`ConsumerNames`):
a loop resuming an interrupted read under a name another loop also used would
be handed that loop's returned, not yet acknowledged entries again. A loop
that ends acknowledges what it returned and passes its name on, with any
read it left interrupted, to the next loop of the same layer instance.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
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
# Channels remembered as opened (stream and default team exist), per event loop.
OPENED_KEPT = 4096


@dataclass
class Owed:
    """What a receiver leaves to the next holder of its consumer name."""

    # Entries returned by receive() whose acknowledgement did not reach Redis.
    unacked: dict[str, list[bytes]] = field(default_factory=dict)
    # Channels whose last read was interrupted: an entry Redis handed to it
    # may sit unseen in the name's pending list.
    resume: set[str] = field(default_factory=set)


class ConsumerNames:
    """The default team's consumer names of one layer instance, one per live event loop.

    A name is ``<client id>-<n>``; a closed loop's receiver gives its name
    back with what it still owes, and the next loop takes the lowest free
    name, so a process never holds more names than it ever ran loops at
    once. Thread-safe: loops of ``async_to_sync`` run in other threads.
    """

    def __init__(self, base: str) -> None:
        self._base = base
        self._lock = threading.Lock()
        self._free: dict[int, Owed] = {}
        self._taken = 0

    def take(self) -> tuple[str, Owed]:
        """A name no live receiver uses, and what its last holder owed."""
        with self._lock:
            if self._free:
                index = min(self._free)
                owed = self._free.pop(index)
            else:
                index, owed = self._taken, Owed()
                self._taken += 1
        return f"{self._base}-{index}", owed

    def give_back(self, name: str, owed: Owed) -> None:
        """Free ``name`` for the next receiver, which takes ``owed`` over."""
        index = int(name.rsplit("-", 1)[1])
        with self._lock:
            self._free[index] = owed

    def forget_owed(self) -> None:
        """Drop what free names owe (after ``flush``: the entries are gone)."""
        with self._lock:
            self._free = {index: Owed() for index in self._free}


class ChannelReceiver:
    """Receives from normal channels on one event loop."""

    def __init__(  # noqa: PLR0913 - collaborators, passed once
        self,
        *,
        shards: ShardSet,
        keys: KeySpace,
        config: LayerConfig,
        codec: MessageCodec,
        names: ConsumerNames,
        clock: ServerClock,
    ) -> None:
        self._shards = shards
        self._keys = keys
        self._config = config
        self._codec = codec
        self._names = names
        self._consumer, owed = names.take()
        self._clock = clock
        # channel -> (its lock, receives waiting for or holding it)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._unacked = owed.unacked
        self._resume = owed.resume
        self._opened: set[str] = set()
        self._closed = False

    @property
    def consumer(self) -> str:
        """The consumer name this receiver reads under."""
        return self._consumer

    async def aclose(self) -> None:
        """Acknowledge what receive() returned, then pass the consumer name on.

        Acknowledgements that fail (Redis unreachable) go on with the name, as
        do interrupted reads: the next loop of this layer instance to receive
        from such a channel sends them first or resumes the read.
        """
        if self._closed:
            return
        self._closed = True
        team, expiry_ms = self._config.team, self._config.expiry_ms
        pending = list(self._unacked.items())
        acked = await asyncio.gather(
            *(
                self._shards.batcher(channel).script(
                    CHAN_ACK, [self._keys.channel(channel)], [team, expiry_ms, *acks]
                )
                for channel, acks in pending
            ),
            return_exceptions=True,
        )
        for (channel, _), result in zip(pending, acked, strict=True):
            if isinstance(result, BaseException):
                logger.debug("channel %s: acknowledging at close failed: %s", channel, result)
            else:
                del self._unacked[channel]
        owed = Owed(self._unacked, self._resume)
        # A read still in flight on this loop (close() racing a receive())
        # must not touch what the next holder of the name takes over.
        self._unacked, self._resume = {}, set()
        self._names.give_back(self._consumer, owed)

    def reset(self) -> None:
        """Forget streams and pending state (after ``flush``)."""
        self._unacked.clear()
        self._resume.clear()
        self._opened.clear()

    async def receive(self, channel: str) -> Message:
        """The next fresh message of ``channel`` for the default team."""
        # A lock per channel while anyone receives from it: a process that
        # receives from ever new channel names keeps nothing per name.
        lock, users = self._locks.get(channel) or (asyncio.Lock(), 0)
        self._locks[channel] = (lock, users + 1)
        try:
            async with lock:
                return await self._receive_in_turn(channel)
        finally:
            lock, users = self._locks[channel]
            if users > 1:
                self._locks[channel] = (lock, users - 1)
            else:
                del self._locks[channel]

    async def _receive_in_turn(self, channel: str) -> Message:
        """One receive: the caller holds the channel's lock."""
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
            if len(self._opened) >= OPENED_KEPT:
                self._opened.clear()  # opening again is one script call
            self._opened.add(channel)
        acks = self._unacked.pop(channel, [])
        resuming = channel in self._resume
        # Until this read returns, an entry may sit unseen in our pending list.
        self._resume.add(channel)
        commands: list[tuple[Any, ...]] = []
        if acks:
            commands.append(("EVALSHA", CHAN_ACK.sha, 1, key, team, self._config.expiry_ms, *acks))
        connections = self._shards.connections(channel)
        block_ms = 0 if resuming else connections.block_ms(self._config.block_ms)
        read: tuple[Any, ...] = ("XREADGROUP", "GROUP", team, self._consumer, "COUNT", 1)
        if not resuming:
            read += ("BLOCK", block_ms)
        commands.append((*read, "STREAMS", key, "0" if resuming else ">"))
        try:
            replies = await connections.run(commands, blocking_s=block_ms / 1000)
        except BaseException:
            self._unacked[channel] = acks + self._unacked.get(channel, [])
            raise
        if acks and isinstance(replies[0], Exception) and not stream_gone(replies[0]):
            # The acknowledgement did not happen: keep it for the next read.
            # (With the stream gone, so are the entries: the read's own error
            # reopens it below.)
            self._unacked[channel] = acks + self._unacked.get(channel, [])
            if isinstance(replies[0], NoScriptError):
                await self._shards.client(channel).script_load(CHAN_ACK.source)
            elif resuming:
                # receive() backs off: a key of another type answers the
                # same until it is a stream again.
                raise translate(replies[0])
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
