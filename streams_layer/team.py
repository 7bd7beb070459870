"""Teams: acknowledged, at-least-once consumption of a normal channel.

``receive()`` is at most once, as the Channels spec says. A worker that must
not lose messages when it dies reads the channel as a member of a *team* (a
Redis consumer group) and acknowledges each message after handling it::

    async with layer.consume("statistic", team="stats", consumer="host-1") as team:
        async for delivery in team:
            async with delivery:  # acknowledged on success, left pending on error
                await handle(delivery.message)

or, with several handlers running at once and ``team.stop()`` from a signal
handler::

    async with layer.consume("statistic", team="stats") as team:
        await team.run(handle, concurrency=4)

The contract (see ``docs/architecture.md``, "Teams"):

- Every team on a channel receives every message; within a team, each message
  goes to one member at a time.
- A message is acknowledged only after its handler finished. What a member
  read but never acknowledged (it died, hung, or its handler raised) is
  claimed by a live teammate (or by itself) once it has been idle for
  ``claim_idle_ms``, and delivered again (``delivery.deliveries`` counts).
- A live member keeps the entries it read but has not handed out yet: once
  ``claim_idle_ms / 10`` has passed since it read (or last refreshed) them,
  it resets their idle time in Redis before its next handout, without
  raising their delivery counts; and its queued acknowledgements reach
  Redis before its own claims. So a member whose every handler finishes
  within ``0.9 * claim_idle_ms`` never has a message claimed, counted again
  or dead-lettered. A member that dies, hangs or stops iterating stops
  refreshing, and a teammate claims its entries ``claim_idle_ms`` later.
- A message delivered more than ``max_deliveries`` times, or whose handler
  raised on its ``max_deliveries``-th delivery, moves to the channel's
  dead-letter stream with the reason; list them with
  ``layer.dead_letters(channel)`` and send one again with
  ``layer.replay_dead_letter(channel, id)``.
- Messages older than the layer's ``expiry`` are dropped, pending or not, so
  at-least-once holds within ``expiry``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from . import metrics
from .config import (
    ACK_CHUNK,
    DEFAULT_BATCH,
    DEFAULT_CLAIM_IDLE_MS,
    DEFAULT_DEAD_LETTER_MAXLEN,
    DEFAULT_DEAD_LETTER_TTL_S,
    DEFAULT_MAX_DELIVERIES,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    TEAM_CLOSE_TIMEOUT_S,
)
from .connection import NETWORK_ERRORS, capped_block_ms, raise_if_cancelling, translate
from .exceptions import InvalidChannelNameError, MalformedEntryError, StreamsLayerError
from .history import parse_stream_id
from .inbox import entry_ms, stream_gone
from .keys import is_specific
from .scripts import CHAN_ACK, STREAM_OPEN, TEAM_CLAIM, TEAM_DEAD, TEAM_LEAVE, TEAM_REPLAY
from .serializers import Message

if TYPE_CHECKING:
    from .layer import RedisStreamsChannelLayer

logger = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[None]]
# Reasons of local handler failures kept for the dead letters (bounded).
FAILURE_MEMORY = 1024
MAX_DEAD_LETTER_LIMIT = 10_000
START_CURSOR = "0-0"
CLAIMED_FIELDS = 3  # id, fields, deliveries per claimed entry in TEAM_CLAIM's reply
# Buffered entries are refreshed (idle time reset in Redis) before a handout
# once claim_idle_ms / REFRESH_DIVISOR went by since they were read or last
# refreshed: a handler gets at least nine tenths of claim_idle_ms. A refresh
# is a round trip, so a member that empties its buffer faster pays nothing.
REFRESH_DIVISOR = 10


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[bytes, bytes]:
    if isinstance(raw, dict):
        return raw
    return {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}


def default_consumer_name() -> str:
    """``<host>-<pid>``: stable for the life of a process, unique across hosts."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _require_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class DeadLetter:
    """A message that a team gave up on, as kept in the dead-letter stream."""

    id: str  # its ID in the dead-letter stream (for replay_dead_letter)
    original_id: str  # its ID in the channel stream
    team: str
    consumer: str
    deliveries: int
    reason: str
    dead_at_ms: int  # server time it was moved, in ms
    message: Message | None  # None when the payload cannot be decoded


@dataclass
class _Entry:
    entry_id: bytes
    fields: dict[bytes, bytes]
    deliveries: int


class Delivery:
    """One message handed to one team member.

    Settle it exactly once: :meth:`ack` after handling, or :meth:`fail` to
    give it back (it is delivered again after ``claim_idle_ms``, or moves to
    the dead letters on its last allowed delivery). As an async context
    manager it acknowledges on success and fails on an exception, which it
    logs and suppresses so that an ``async for`` loop goes on; cancellation
    is not suppressed and leaves the message pending.
    """

    def __init__(self, team: TeamConsumer, entry: _Entry, message: Message) -> None:
        self._team = team
        self.id = entry.entry_id.decode()
        self.message = message
        self.deliveries = entry.deliveries
        self.settled = False

    def __repr__(self) -> str:
        return f"<Delivery {self.id} of {self._team.channel!r} #{self.deliveries}>"

    async def ack(self) -> None:
        """Acknowledge the message.

        The XACK is coalesced with the team's other acknowledgements and sent
        in the next round trip; it is retried until Redis has it or the team
        consumer closes (``async with`` exit waits for it).
        """
        if self.settled:
            return
        self.settled = True
        self._team._acknowledge(self.id.encode())

    async def fail(self, reason: str) -> None:
        """Give the message back: it stays pending and is delivered again later.

        On its ``max_deliveries``-th delivery it moves to the dead letters
        with ``reason`` instead. Raises
        :class:`~streams_layer.exceptions.LayerConnectionError` when Redis
        is unreachable for the move (the message then stays pending).
        """
        if self.settled:
            return
        self.settled = True
        await self._team._failed(self, reason)

    async def __aenter__(self) -> Delivery:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc is None:
            await self.ack()
            return False
        if not isinstance(exc, Exception):
            return False  # cancelled or exiting: leave it pending for a teammate
        logger.warning(
            "channel %s team %s: handler failed on %s (delivery %d): %r",
            self._team.channel,
            self._team.team,
            self.id,
            self.deliveries,
            exc,
        )
        await self.fail(f"{type(exc).__name__}: {exc}")
        return True


class TeamConsumer:
    """One member of a team on a normal channel; build it with ``layer.consume()``.

    Use it as an async context manager: entering opens the stream and the
    team's consumer group (created at the oldest entry still kept, so
    messages sent before the team existed are read too); leaving stops
    reading, sends the last acknowledgements and removes the consumer from
    the group if it holds no pending entry (otherwise its entries are left
    for teammates to claim).

    Reads ``batch`` entries per ``XREADGROUP``; every ``claim_idle_ms / 2``
    it claims up to ``batch`` entries idle for ``claim_idle_ms``, after
    sending its queued acknowledgements. Entries waiting in its buffer are
    refreshed in Redis (idle time reset, delivery count unchanged) before a
    handout once ``claim_idle_ms / 10`` went by since they were read or last
    refreshed, so each handler has at least ``0.9 * claim_idle_ms``: the
    longest handler must stay under that, or a slow but live member's
    message is delivered to a teammate too.
    """

    def __init__(  # noqa: PLR0913 - the team's settings, keyword-only
        self,
        layer: RedisStreamsChannelLayer,
        channel: str,
        *,
        team: str,
        consumer: str | None = None,
        batch: int = DEFAULT_BATCH,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        block_ms: int | None = None,
        dead_letter_maxlen: int = DEFAULT_DEAD_LETTER_MAXLEN,
        dead_letter_ttl_s: int = DEFAULT_DEAD_LETTER_TTL_S,
    ) -> None:
        layer.require_valid_channel_name(channel)
        if is_specific(channel):
            raise InvalidChannelNameError(
                f"teams read normal channels only; {channel!r} is process-specific"
            )
        if not isinstance(team, str) or not team:
            raise ValueError(f"team must be a non-empty str, got {team!r}")
        if consumer is not None and (not isinstance(consumer, str) or not consumer):
            raise ValueError(f"consumer must be a non-empty str, got {consumer!r}")
        self.channel = channel
        self.team = team
        self.consumer = consumer or default_consumer_name()
        self.batch = _require_positive("batch", batch)
        self.claim_idle_ms = _require_positive("claim_idle_ms", claim_idle_ms)
        self.max_deliveries = _require_positive("max_deliveries", max_deliveries)
        self.block_ms = min(
            _require_positive("block_ms", block_ms or layer.config.block_ms), self.claim_idle_ms
        )
        self._dead_args = [
            _require_positive("dead_letter_maxlen", dead_letter_maxlen),
            _require_positive("dead_letter_ttl_s", dead_letter_ttl_s),
        ]
        self._layer = layer
        self._key = layer.keys.channel(channel)
        self._dead_key = layer.keys.dead(channel)
        self._buffer: deque[_Entry] = deque()
        # loop.time() before the buffered entries were last read, claimed or
        # refreshed: an upper bound of their idle time in Redis.
        self._fresh_at = 0.0
        self._refresh_after_s = self.claim_idle_ms / REFRESH_DIVISOR / 1000
        self._acks: list[bytes] = []
        # Acknowledged entries that were dropped as expired, not handled.
        self._uncounted_acks = 0
        self._ack_task: asyncio.Task[None] | None = None
        self._failures: OrderedDict[str, str] = OrderedDict()
        self._read_lock = asyncio.Lock()
        self._cursor = START_CURSOR
        self._next_claim_at = 0.0
        self._opened = False
        self._stopping = False
        self._stopped = asyncio.Event()

    def __repr__(self) -> str:
        return f"<TeamConsumer {self.consumer!r} of team {self.team!r} on {self.channel!r}>"

    # Life cycle ------------------------------------------------------------

    async def __aenter__(self) -> TeamConsumer:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def stop(self) -> None:
        """Stop reading: the iteration ends once the entries already read are handed out.

        Safe to call from a signal handler (``loop.add_signal_handler``). A
        blocking read in progress is abandoned; should Redis have handed it
        entries already, they stay pending and teammates claim them after
        ``claim_idle_ms``.
        """
        self._stopping = True
        self._stopped.set()

    async def aclose(self) -> None:
        """Stop, deliver the remaining acknowledgements, and leave the team if nothing is pending.

        Gives up on acknowledgements after ``TEAM_CLOSE_TIMEOUT_S`` seconds
        of Redis being unreachable (those messages are delivered again).
        """
        self._stopping = True
        if self._buffer:
            logger.info(
                "%r: %d read entries were not handed out; teammates will claim them",
                self,
                len(self._buffer),
            )
            self._buffer.clear()
        try:
            await asyncio.wait_for(self._flush_all_acks(), TEAM_CLOSE_TIMEOUT_S)
        except TimeoutError:
            logger.warning("%r: %d acknowledgements could not be sent", self, len(self._acks))
        try:
            pending = await self._batcher().script(
                TEAM_LEAVE, [self._key], [self.team, self.consumer]
            )
        except (StreamsLayerError, *NETWORK_ERRORS) as exc:
            logger.warning("%r: could not leave the team: %s", self, exc)
            return
        if pending:
            logger.info("%r: %d entries stay pending for teammates to claim", self, pending)

    # Iteration -------------------------------------------------------------

    def __aiter__(self) -> TeamConsumer:
        return self

    async def __anext__(self) -> Delivery:
        """The next delivery; waits for one, retrying while Redis is unreachable.

        Ends (``StopAsyncIteration``) after :meth:`stop`, once the entries
        already read have been handed out.
        """
        async with self._read_lock:
            delay = RECONNECT_MIN_S
            while True:
                try:
                    delivery = await self._next_buffered()
                    if delivery is not None:
                        return delivery
                    if self._stopping:
                        raise StopAsyncIteration
                    await self._fill()
                except (StreamsLayerError, *NETWORK_ERRORS) as exc:
                    raise_if_cancelling()
                    if self._stopping:
                        # The rest of the buffer stays pending for teammates.
                        logger.warning("%r: read failed (%s) while stopping", self, exc)
                        self._buffer.clear()
                        raise StopAsyncIteration from exc
                    logger.warning("%r: read failed (%s); retrying", self, exc)
                    self._opened = False
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
                delay = RECONNECT_MIN_S

    async def run(self, handler: Handler, *, concurrency: int = 1) -> None:
        """Handle every message with ``handler`` until :meth:`stop`, ``concurrency`` at a time.

        A handler that raises leaves its message pending (see
        :class:`Delivery`); the others go on. Returns when stopped, after
        every handler already started has finished.
        """
        _require_positive("concurrency", concurrency)

        async def work() -> None:
            async for delivery in self:
                async with delivery:
                    await handler(delivery.message)

        await asyncio.gather(*(work() for _ in range(concurrency)))

    async def _next_buffered(self) -> Delivery | None:
        """The next buffered entry as a delivery, refreshing the buffer first if due.

        An entry's idle time in Redis runs from its read, not its handout:
        without the refresh, entries waiting behind slow handlers would be
        claimed (by a teammate, or by this member once its buffer is empty)
        and counted as deliveries they never were.
        """
        if self._buffer and (
            asyncio.get_running_loop().time() - self._fresh_at >= self._refresh_after_s
        ):
            await self._refresh()
        while self._buffer:
            entry = self._buffer.popleft()
            message = await self._decode(entry)
            if message is not None:
                metrics.record(metrics.RECEIVED, channel=self.channel, team=self.team)
                return Delivery(self, entry, message)
        return None

    async def _decode(self, entry: _Entry) -> Message | None:
        expires_at = (entry_ms(entry.entry_id) + self._layer.config.expiry_ms) / 1000
        if expires_at <= self._state().clock.now():
            metrics.record(metrics.EXPIRED, channel=self.channel, team=self.team)
            self._acknowledge(entry.entry_id, count_metric=False)
            return None
        try:
            return self._layer.codec.decode(entry.fields.get(b"m", b""))
        except MalformedEntryError as exc:
            logger.warning("%r: entry %r cannot be decoded: %s", self, entry.entry_id, exc)
            await self._dead_letter(entry.entry_id.decode(), f"undecodable: {exc}")
            return None

    # Redis -----------------------------------------------------------------

    def _state(self) -> Any:
        return self._layer._state()

    def _batcher(self) -> Any:
        return self._state().shards.batcher(self.channel)

    async def _open(self) -> None:
        server_ms = await self._batcher().script(
            STREAM_OPEN, [self._key], [self.team, self._layer.config.key_ttl_s]
        )
        self._state().clock.observe(int(server_ms))
        self._opened = True

    async def _fill(self) -> None:
        """Fill the empty buffer: claim idle entries when due, otherwise read new ones."""
        if not self._opened:
            await self._open()
        now = asyncio.get_running_loop().time()
        if now >= self._next_claim_at:
            self._next_claim_at = now + self.claim_idle_ms / 2000
            await self._claim()
            if self._buffer:
                return
        await self._read()

    async def _read(self) -> None:
        client = self._state().shards.client(self.channel)
        block_ms = capped_block_ms(client, self.block_ms)
        read = asyncio.ensure_future(
            client.xreadgroup(
                self.team, self.consumer, {self._key: ">"}, count=self.batch, block=block_ms
            )
        )
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not read.done():
                read.cancel()
            await asyncio.gather(read, stopped, return_exceptions=True)
        if read.cancelled():
            return
        try:
            reply = read.result()
        except ResponseError as exc:
            if stream_gone(exc):  # the stream expired or was flushed: open it again
                self._opened = False
                return
            raise translate(exc) from exc
        # Redis delivered them just before replying (a blocking read may have
        # waited long before that).
        self._fresh_at = asyncio.get_running_loop().time()
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                if fields is None:
                    continue  # deleted: nothing to deliver
                self._buffer.append(_Entry(entry_id, _fields(fields), 1))

    async def _housekeep(self, count: int) -> Any:
        """Run TEAM_CLAIM: queued acks, then the buffer's refresh, then claim ``count``.

        The queued acknowledgements go first so that an entry handled just
        now is not claimed again (the ack task would send them after this
        call); the ack task still sends them, and a second XACK is a no-op.
        Returns the script's reply, or ``None`` when the stream or group is
        gone (the stream is opened again on the next read).
        """
        acks = self._acks[:ACK_CHUNK]
        try:
            return await self._batcher().script(
                TEAM_CLAIM,
                [self._key, self._dead_key],
                [
                    self.team,
                    self.consumer,
                    self.claim_idle_ms,
                    self._cursor,
                    count,
                    self.max_deliveries,
                    *self._dead_args,
                    self._layer.config.expiry_ms,
                    len(acks),
                    *acks,
                    *(entry.entry_id for entry in self._buffer),
                ],
            )
        except StreamsLayerError as exc:
            if stream_gone(exc):
                self._opened = False
                self._buffer.clear()
                return None
            raise

    async def _refresh(self) -> None:
        """Reset the idle time of the buffered entries; drop those a teammate claimed."""
        sent_at = asyncio.get_running_loop().time()
        reply = await self._housekeep(0)
        if reply is None:
            return
        held = set(reply[4])
        before = len(self._buffer)
        self._buffer = deque(entry for entry in self._buffer if entry.entry_id in held)
        self._fresh_at = sent_at
        if len(self._buffer) < before:
            logger.info(
                "%r: %d buffered entries were claimed by teammates or deleted",
                self,
                before - len(self._buffer),
            )

    async def _claim(self) -> None:
        sent_at = asyncio.get_running_loop().time()
        reply = await self._housekeep(self.batch)
        if reply is None:
            return
        cursor, claimed, dead, gone, _held = reply
        self._cursor = _text(cursor)
        self._fresh_at = sent_at
        for i in range(0, len(claimed) - CLAIMED_FIELDS + 1, CLAIMED_FIELDS):
            entry_id, fields, deliveries = claimed[i : i + CLAIMED_FIELDS]
            self._buffer.append(_Entry(entry_id, _fields(fields), int(deliveries)))
        count = len(claimed) // CLAIMED_FIELDS
        if count:
            logger.info("%r: claimed %d idle entries", self, count)
            metrics.record(metrics.CLAIMED, count, channel=self.channel, team=self.team)
        if dead:
            logger.warning("%r: moved %d entries to the dead letters", self, dead)
            metrics.record(metrics.DEAD_LETTERED, int(dead), channel=self.channel, team=self.team)
        if gone:
            logger.info("%r: %d pending entries had expired", self, gone)
            metrics.record(metrics.EXPIRED, int(gone), channel=self.channel, team=self.team)

    # Acknowledgements and failures ----------------------------------------

    def _acknowledge(self, entry_id: bytes, *, count_metric: bool = True) -> None:
        self._acks.append(entry_id)
        self._failures.pop(entry_id.decode(), None)
        if not count_metric:
            self._uncounted_acks += 1
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        """Send queued acknowledgements; on failure keep them and retry with back-off."""
        delay = RECONNECT_MIN_S
        while self._acks:
            ids = self._acks[:ACK_CHUNK]
            try:
                await self._batcher().script(
                    CHAN_ACK, [self._key], [self.team, self._layer.config.expiry_ms, *ids]
                )
            except (StreamsLayerError, *NETWORK_ERRORS) as exc:
                raise_if_cancelling()
                logger.warning("%r: %d acknowledgements failed (%s); retrying", self, len(ids), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            del self._acks[: len(ids)]
            uncounted = min(self._uncounted_acks, len(ids))
            self._uncounted_acks -= uncounted
            metrics.record(
                metrics.ACKNOWLEDGED, len(ids) - uncounted, channel=self.channel, team=self.team
            )
            delay = RECONNECT_MIN_S

    async def _flush_all_acks(self) -> None:
        while self._acks or (self._ack_task is not None and not self._ack_task.done()):
            if self._ack_task is None or self._ack_task.done():
                self._ack_task = asyncio.get_running_loop().create_task(self._flush_acks())
            await asyncio.shield(self._ack_task)

    async def _failed(self, delivery: Delivery, reason: str) -> None:
        if delivery.deliveries >= self.max_deliveries:
            await self._dead_letter(delivery.id, reason)
            return
        self._failures[delivery.id] = reason
        while len(self._failures) > FAILURE_MEMORY:
            self._failures.popitem(last=False)

    async def _dead_letter(self, entry_id: str, reason: str) -> None:
        moved = await self._batcher().script(
            TEAM_DEAD,
            [self._key, self._dead_key],
            [
                self.team,
                self.consumer,
                entry_id,
                reason,
                *self._dead_args,
                self._layer.config.expiry_ms,
            ],
        )
        if moved == 1:
            logger.warning("%r: %s moved to the dead letters: %s", self, entry_id, reason)
            metrics.record(metrics.DEAD_LETTERED, channel=self.channel, team=self.team)


# Dead letters ---------------------------------------------------------------


async def list_dead_letters(
    layer: RedisStreamsChannelLayer, channel: str, *, limit: int = 100
) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters of ``channel`` (every team), oldest first.

    Entries the layer did not write (a field that is not a number or not
    UTF-8) are skipped with a warning. Raises
    :class:`~streams_layer.exceptions.RedisCommandError` when Redis refuses
    the read (a key of another type, a missing ACL permission) and
    :class:`~streams_layer.exceptions.LayerConnectionError` when it is
    unreachable.
    """
    layer.require_valid_channel_name(channel)
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 0 < limit <= MAX_DEAD_LETTER_LIMIT
    ):
        raise ValueError(f"limit must be an int from 1 to {MAX_DEAD_LETTER_LIMIT}, got {limit!r}")
    client = layer._state().shards.client(channel)
    key = layer.keys.dead(channel)
    try:
        entries: Any = await client.xrange(key, count=limit)
    except (ResponseError, *NETWORK_ERRORS) as exc:
        raise translate(exc) from exc
    letters = []
    for entry_id, fields in entries:
        try:
            letters.append(_dead_letter_from(layer, entry_id, fields))
        except MalformedEntryError as exc:
            logger.warning("dead letters %s: skipping entry %r: %s", key, entry_id, exc)
    return letters


def _dead_letter_from(
    layer: RedisStreamsChannelLayer, entry_id: bytes, fields: dict[bytes, bytes]
) -> DeadLetter:
    """One dead letter; raises :class:`MalformedEntryError` for an entry the layer did not write."""
    try:
        message: Message | None = layer.codec.decode(fields.get(b"m", b""))
    except MalformedEntryError:
        # Undecodable, or encrypted longer ago than expiry (Fernet's TTL).
        message = None
    try:
        return DeadLetter(
            id=entry_id.decode(),
            original_id=_text(fields.get(b"id", b"")),
            team=_text(fields.get(b"team", b"")),
            consumer=_text(fields.get(b"consumer", b"")),
            deliveries=int(fields.get(b"deliveries", b"0")),
            reason=_text(fields.get(b"reason", b"")),
            dead_at_ms=entry_ms(entry_id),
            message=message,
        )
    except ValueError as exc:  # int() of a non-number, or bytes that are not UTF-8
        raise MalformedEntryError(f"malformed dead letter: {exc}") from exc


async def replay_dead_letter(
    layer: RedisStreamsChannelLayer, channel: str, dead_letter_id: str
) -> str | None:
    """Send a dead letter to ``channel`` again and remove it from the dead letters.

    Returns the new entry's stream ID, or ``None`` when there is no such dead
    letter. Every team of the channel receives the replayed message (it is a
    new entry); capacity is not checked.
    """
    layer.require_valid_channel_name(channel)
    parse_stream_id(dead_letter_id)
    batcher = layer._state().shards.batcher(channel)
    new_id = await batcher.script(
        TEAM_REPLAY,
        [layer.keys.dead(channel), layer.keys.channel(channel)],
        [dead_letter_id, layer.config.key_ttl_s],
    )
    return None if new_id is None else _text(new_id)
