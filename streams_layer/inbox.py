"""The inbox reader: one task per layer instance and event loop.

Every process-specific channel of a layer instance lives in one stream, its
inbox, so one blocking ``XREADGROUP`` serves all of them (and on a cluster a
blocking read never spans slots). The reader demultiplexes entries into
:class:`~streams_layer.mailbox.Mailboxes`. Once nobody on its loop
receives, it stops: at once if the loop waited in ``receive()`` only once,
else a while after the last receive (``_LoopState.reader_wanted`` in
layer.py).

The inbox's consumer group is read with ``NOACK``: the group's
last-delivered ID moves atomically with each read, which lets the send script
tell entries already read (their capacity is given back when ``receive()``
takes them) from entries still waiting in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from .config import (
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    SWEEP_INTERVAL_S,
    TRIM_EVERY,
    TRIM_INTERVAL_S,
    LayerConfig,
)
from .connection import (
    NETWORK_ERRORS,
    Client,
    CommandBatcher,
    KeptConnections,
    ServerClock,
    StreamEntry,
    raise_if_cancelling,
    stream_entries,
)
from .exceptions import MalformedEntryError, StreamsLayerError
from .mailbox import Mailboxes
from .scripts import INBOX_DELIVERED, INBOX_IDLE, STREAM_OPEN
from .serializers import MessageCodec

logger = logging.getLogger(__name__)

READER_GROUP = "reader"
READER_CONSUMER = "reader"
# Error prefixes meaning the stream or its group no longer exists.
STREAM_GONE = ("NOGROUP", "UNBLOCKED")


def stream_gone(exc: BaseException) -> bool:
    """Whether a read failed because its stream or group no longer exists."""
    return any(gone in str(exc) for gone in STREAM_GONE)


def next_id(entry_id: bytes) -> str:
    """The smallest stream ID after ``entry_id``."""
    ms, _, seq = entry_id.decode().partition("-")
    return f"{ms}-{int(seq) + 1}"


def entry_ms(entry_id: bytes) -> int:
    """Milliseconds part of a stream ID: the server time the entry was added."""
    return int(entry_id.split(b"-", 1)[0])


class ReadLedger:
    """What the inbox readers of one layer instance (one per event loop) have read.

    The readers share the inbox's consumer group and read with ``NOACK``, so
    Redis counts an entry as read the moment it hands it to a read. A read
    whose reply never arrives (a dropped connection, a reader cancelled as its
    loop ends) leaves entries between the newest one any reader took in and
    the group's last-delivered ID; the next reader to start, on any loop,
    fetches them with ``XRANGE``. While readers of other loops run, that range
    may hold entries one of them is delivering right now, so a reader fetches
    it only when it is the only one running; otherwise those entries are
    given up: at most once, never twice. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_seen: tuple[int, int] | None = None
        self._lost = False
        self._running = 0

    @property
    def last_seen(self) -> bytes | None:
        """The newest entry ID a reader took in, or None (none since the start or a flush)."""
        seen = self._last_seen
        return None if seen is None else f"{seen[0]}-{seen[1]}".encode()

    def seen(self, entry_id: bytes) -> None:
        """A reader took in the entries up to ``entry_id``."""
        seen = _as_id(entry_id)
        with self._lock:
            if self._last_seen is None or seen > self._last_seen:
                self._last_seen = seen

    def read_lost(self) -> None:
        """A read ended without its reply: it may have been handed entries."""
        self._lost = True

    def start(self) -> None:
        """A reader starts running."""
        with self._lock:
            self._running += 1

    def stop(self) -> None:
        """A reader stops running."""
        with self._lock:
            self._running -= 1

    @property
    def others_running(self) -> bool:
        """Whether readers of other loops run besides the calling one."""
        return self._running > 1

    def take_recovery(self) -> bool:
        """Whether the calling reader should fetch what lost reads were handed."""
        with self._lock:
            if not self._lost:
                return False
            self._lost = False
            if self._running > 1:
                logger.info("inbox: a read was lost while other loops read too; not fetched")
                return False
            return True

    def reset(self) -> None:
        """Forget everything (``flush`` deleted the inbox)."""
        with self._lock:
            self._last_seen = None
            self._lost = False


class InboxReader:
    """Reads one inbox on one event loop into the shared mailboxes."""

    def __init__(  # noqa: PLR0913 - collaborators, passed once
        self,
        *,
        client: Client,
        batcher: CommandBatcher,
        connections: KeptConnections,
        inbox_key: str,
        counts_key: str,
        config: LayerConfig,
        codec: MessageCodec,
        mailboxes: Mailboxes,
        ledger: ReadLedger,
        clock: ServerClock,
        wanted: Callable[[], bool],
        on_dropped: Callable[[Counter[str]], None],
        on_group_read: Callable[[list[str], list[str], list[str]], None],
        capacity_of: Callable[[str], int],
    ) -> None:
        self._client = client
        self._batcher = batcher
        self._connections = connections
        self._key = inbox_key
        self._counts_key = counts_key
        self._config = config
        self._codec = codec
        self._mailboxes = mailboxes
        self._ledger = ledger
        self._clock = clock
        self._wanted = wanted
        self._on_dropped = on_dropped
        self._on_group_read = on_group_read
        self._capacity_of = capacity_of
        self._task: asyncio.Task[None] | None = None
        self._read_upto: bytes | None = None
        self._read_since_trim = 0
        self._opened = False
        self._next_sweep = 0.0
        self._next_trim = 0.0

    def ensure_running(self) -> None:
        """Start the reader task unless it runs."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def reset(self) -> None:
        """Forget that the stream exists (after ``flush``)."""
        self._opened = False
        self._read_upto = None
        self._ledger.reset()

    async def stop(self) -> None:
        """Cancel the reader task and wait for it."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        self._ledger.start()
        try:
            await self._read_while_wanted()
        finally:
            self._ledger.stop()

    async def _read_while_wanted(self) -> None:
        delay = RECONNECT_MIN_S
        while self._wanted():
            try:
                entries = await self._read()
            except NETWORK_ERRORS as exc:
                raise_if_cancelling()
                logger.warning("inbox %s: Redis unreachable (%s); retrying", self._key, exc)
                self._opened = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            except (ResponseError, StreamsLayerError) as exc:
                raise_if_cancelling()
                # NOGROUP / UNBLOCKED: the inbox expired or was flushed; open it again.
                if not stream_gone(exc):
                    logger.error("inbox %s: read failed: %s", self._key, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                self._opened = False
                continue
            delay = RECONNECT_MIN_S
            for entry_id, fields in entries:
                self._deliver(entry_id, fields)
            if entries:
                self._read_upto = entries[-1][0]
                self._ledger.seen(self._read_upto)
            self._read_since_trim += len(entries)
            self._sweep_if_due()
            if not entries and not len(self._mailboxes):
                await self._reset_counts_if_empty()
            # Let the receivers just woken run first: what they send goes
            # out ahead of the next read, and if they were the last ones and
            # their loop does not keep the reader going (see
            # _LoopState.reader_wanted in layer.py), the reader stops here
            # instead of starting another blocking read.
            await asyncio.sleep(0)
        self._mailboxes.wake_all()

    async def _reset_counts_if_empty(self) -> None:
        try:
            await self._batcher.script(INBOX_IDLE, [self._key, self._counts_key], [])
        except (*NETWORK_ERRORS, StreamsLayerError) as exc:
            logger.debug("inbox %s: idle count reset failed: %s", self._key, exc)

    async def _entries_lost_in_flight(self) -> list[StreamEntry]:
        """Entries Redis delivered to a read whose reply never arrived (CLIENT KILL, a
        dropped connection, a reader cancelled mid-read): still in the stream,
        between the newest entry a reader took in and the group's last-delivered ID."""
        last_seen = self._ledger.last_seen
        delivered = await self._batcher.run_script(INBOX_DELIVERED, [self._key], [READER_GROUP])
        if not delivered or (last_seen is not None and _as_id(delivered) <= _as_id(last_seen)):
            return []
        lost: Any = await self._client.xrange(
            self._key,
            min=b"-" if last_seen is None else b"(" + last_seen,
            max=delivered,
            count=self._config.read_count,
        )
        if lost:
            logger.info("inbox %s: fetched %d entries a dropped read lost", self._key, len(lost))
        return list(lost or [])

    async def _read(self) -> list[StreamEntry]:
        if not self._opened:
            ttl = self._config.key_ttl_s
            server_ms = await self._batcher.script(STREAM_OPEN, [self._key], [READER_GROUP, ttl])
            self._clock.observe(int(server_ms))
            self._opened = True
        if self._ledger.take_recovery():
            try:
                lost = await self._entries_lost_in_flight()
            except BaseException:
                self._ledger.read_lost()  # try again with the next read
                raise
            if lost:
                return lost
        commands: list[tuple[Any, ...]] = []
        trim = self._read_upto is not None and (
            self._read_since_trim >= TRIM_EVERY or time.monotonic() >= self._next_trim
        )
        if trim and self._read_upto is not None:
            # Entries already read leave Redis with a later read: every
            # TRIM_INTERVAL_S, so a busy ping-pong does not pay for an XTRIM per
            # read, or after TRIM_EVERY entries, so a fast one stays under
            # INBOX_BACKLOG (above it every send looks for expired entries,
            # which cost about a third of the send script's time).
            commands.append(("XTRIM", self._key, "MINID", next_id(self._read_upto)))
            self._next_trim = time.monotonic() + TRIM_INTERVAL_S
            self._read_since_trim = 0
        group = ("GROUP", READER_GROUP, READER_CONSUMER)
        options = ("COUNT", self._config.read_count, "BLOCK", self._config.block_ms, "NOACK")
        commands.append(("XREADGROUP", *group, *options, "STREAMS", self._key, ">"))
        try:
            replies = await self._connections.run(commands, blocking_s=self._config.block_ms / 1000)
        except BaseException:
            # Cancelled or failed with the read in flight: Redis may have
            # handed it entries that never reached us.
            self._ledger.read_lost()
            raise
        if trim:
            self._read_upto = None
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return stream_entries(replies[-1])

    def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> None:
        group = b"g" in (fields or {})
        try:
            channels = _field(fields, b"c").decode().split(",")
            payload = _field(fields, b"m")
        except (MalformedEntryError, UnicodeDecodeError) as exc:
            logger.warning("inbox %s: skipping malformed entry %r: %s", self._key, entry_id, exc)
            if group:
                self._on_group_read([], [], [])  # read all the same
            return
        expires_at = self._clock.to_local((entry_ms(entry_id) + self._config.expiry_ms) / 1000)
        expired = expires_at <= time.time()
        message = None
        if not expired:
            try:
                message = self._codec.decode(payload)
            except MalformedEntryError as exc:
                logger.warning("inbox %s: skipping entry %r: %s", self._key, entry_id, exc)
        if group:
            # Its members' capacity was not counted when it was sent: a member
            # whose buffer is full misses it here, the others hold a count
            # until they receive it (see inbox_send.lua).
            held: list[str] = []
            full: list[str] = []
            if message is not None:
                held, full = self._mailboxes.put_group(
                    channels, message, expires_at, self._capacity_of
                )
            self._on_group_read(held, channels if expired else [], full)
        elif message is None:
            self._on_dropped(Counter(channels))
        else:
            for index, channel in enumerate(channels):
                self._mailboxes.put(channel, message if index == 0 else dict(message), expires_at)

    def _sweep_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_S
        dropped: Counter[str] = Counter()
        self._mailboxes.sweep(dropped)
        if dropped:
            self._on_dropped(dropped)


def _as_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _field(fields: dict[bytes, bytes] | None, name: bytes) -> bytes:
    value = (fields or {}).get(name)
    if not isinstance(value, bytes):
        raise MalformedEntryError(f"entry has no field {name!r}")
    return value
