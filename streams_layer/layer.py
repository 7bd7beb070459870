"""``RedisStreamsChannelLayer``: the Channels layer spec on Redis Streams."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from channels.layers import BaseChannelLayer
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from . import metrics
from .channel import ChannelReceiver, ConsumerNames
from .config import (
    DEFAULT_CAPACITY,
    DEFAULT_EXPIRY_S,
    DEFAULT_GROUP_EXPIRY_S,
    DEFAULT_PREFIX,
    DEFAULT_SERIALIZER_FORMAT,
    GIVE_BACK_DELAY_S,
    GIVE_BACK_EAGER_SHARE,
    GIVE_BACK_RETRY_S,
    GROUP_READ_FIELD,
    READER_LINGER_S,
    build_config,
)
from .connection import NETWORK_ERRORS, ServerClock, ShardSet, scan_keys, translate
from .exceptions import (
    ChannelFull,
    InvalidChannelNameError,
    MalformedEntryError,
    StreamsLayerError,
)
from .groups import FanOutPlan, GroupMembers
from .history import (
    HISTORY_ID_KEY,
    LONGEST_STREAM_ID,
    MAX_HISTORY_LIMIT,
    GroupHistory,
    is_complete,
    parse_stream_id,
)
from .inbox import InboxReader, ReadLedger
from .keys import KeySpace, client_of, is_specific
from .mailbox import Mailboxes
from .scripts import (
    CHAN_SEND,
    GROUP_ADD,
    GROUP_DISCARD,
    HISTORY_ADD,
    INBOX_CONSUMED,
    INBOX_SEND,
    Script,
)
from .serializers import Message, MessageCodec
from .status import LayerStatus, collect_status
from .team import DeadLetter, TeamConsumer, list_dead_letters, replay_dead_letter

logger = logging.getLogger(__name__)

# Channel names remembered as valid, per layer instance.
NAME_CACHE_SIZE = 4096
UNLINK_BATCH = 500


class _ConsumedCounts:
    """Per channel, capacity to give back to the inbox counts (negative: held).

    Shared by every event loop of a layer instance, so by threads too: each
    change is made under a lock (a read, then a write, from two threads
    could lose a count, and the channel its capacity until the counts expire).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._counts)

    def add(self, channel: str, delta: int) -> int:
        """Change ``channel``'s count by ``delta``; returns the new count."""
        # Once per receive: acquire()/release() cost 60 ns less than ``with``
        # (see metrics.record).
        self._lock.acquire()
        try:
            count = self._counts[channel] = self._counts.get(channel, 0) + delta
        finally:
            self._lock.release()
        return count

    def add_each(self, channels: Iterable[str], delta: int) -> None:
        """:meth:`add` ``delta`` for every channel of ``channels``."""
        with self._lock:
            counts = self._counts
            for channel in channels:
                counts[channel] = counts.get(channel, 0) + delta

    def add_all(self, counts: Mapping[str, int]) -> None:
        """:meth:`add` each count of ``counts``."""
        with self._lock:
            for channel, delta in counts.items():
                self._counts[channel] = self._counts.get(channel, 0) + delta

    def take_positive(self, channel: str) -> int:
        """``channel``'s count if positive, removed; else 0 (a hold stays)."""
        with self._lock:
            count = self._counts.get(channel, 0)
            if count <= 0:
                return 0
            del self._counts[channel]
        return count

    def take_all(self) -> Counter[str]:
        """Every non-zero count, removed."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return Counter({channel: count for channel, count in counts.items() if count})

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


class _LoopState:
    """Everything of one layer instance that belongs to one event loop."""

    def __init__(self, layer: RedisStreamsChannelLayer) -> None:
        self.shards = ShardSet(layer.config.hosts)
        self.clock = ServerClock()
        self.active_receives = 0
        self.ledger = layer._read_ledger
        # How often receive() waited for the reader on this loop, and when
        # the last such wait ended (see reader_wanted).
        self.waits = 0
        self.last_wait_ended = 0.0
        self.pending_tasks: set[asyncio.Task[Any]] = set()
        self.give_back_timer: asyncio.Handle | None = None
        # Whether give_back_timer is the GIVE_BACK_DELAY_S one (an earlier one may replace it).
        self.give_back_delayed = False
        self.closed = False
        tag = layer.client_id
        self.reader = InboxReader(
            client=self.shards.client(tag),
            batcher=self.shards.batcher(tag),
            connections=self.shards.connections(tag),
            inbox_key=layer.keys.inbox(tag),
            counts_key=layer.keys.inbox_counts(tag),
            config=layer.config,
            codec=layer.codec,
            mailboxes=layer.mailboxes,
            ledger=self.ledger,
            clock=self.clock,
            wanted=self.reader_wanted,
            on_dropped=layer._dropped,
            on_group_read=layer._group_read,
            capacity_of=layer.get_capacity,
        )
        self.channels = ChannelReceiver(
            shards=self.shards,
            keys=layer.keys,
            config=layer.config,
            codec=layer.codec,
            names=layer._consumer_names,
            clock=self.clock,
        )

    def reader_wanted(self) -> bool:
        """Whether the inbox reader should go on reading: a receive() waits,
        or this loop waits in receive() again and again and the last wait
        ended less than READER_LINGER_S ago (see config.READER_LINGER_S).

        Not while readers of other loops of the instance run: a loop that
        ends cancels its reader's read, and what Redis may have handed that
        read is given up when another reader runs (inbox.ReadLedger).
        """
        if self.active_receives:
            return True
        return (
            self.waits > 1
            and time.monotonic() - self.last_wait_ended < READER_LINGER_S
            and not self.ledger.others_running
        )

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.pending_tasks.add(task)
        task.add_done_callback(self.pending_tasks.discard)

    async def aclose(self) -> None:
        """Stop the reader and close the connections; a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        if self.give_back_timer is not None:
            self.give_back_timer.cancel()
            self.give_back_timer = None
        await self.reader.stop()
        if self.pending_tasks:
            await asyncio.gather(*self.pending_tasks, return_exceptions=True)
        await self.shards.aclose()


class RedisStreamsChannelLayer(BaseChannelLayer):
    """A Channels layer on Redis Streams, CONFIG-compatible with channels_redis.

    Process-specific channels (``new_channel()``) of one instance share one
    inbox stream read by one task per event loop; normal channels are streams
    read through a consumer group, so processes receiving from one share its
    messages. See ``docs/architecture.md`` for the key space and guarantees.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]

    def __init__(  # noqa: PLR0913, PLR0917 - channels_redis's CONFIG keys, positional there too
        self,
        hosts: Iterable[Any] | None = None,
        prefix: str = DEFAULT_PREFIX,
        expiry: float = DEFAULT_EXPIRY_S,
        group_expiry: int = DEFAULT_GROUP_EXPIRY_S,
        capacity: int = DEFAULT_CAPACITY,
        channel_capacity: Mapping[Any, int] | None = None,
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        serializer_format: str = DEFAULT_SERIALIZER_FORMAT,
        **options: Any,
    ) -> None:
        self.config = build_config(
            hosts=hosts,
            prefix=prefix,
            expiry=expiry,
            group_expiry=group_expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            symmetric_encryption_keys=symmetric_encryption_keys,
            serializer_format=serializer_format,
            **options,
        )
        # The validated values: 60.0 in CONFIG is 60 here.
        super().__init__(expiry=self.config.expiry_s, capacity=self.config.capacity)
        self.channel_capacity = list(self.config.channel_capacity)
        self.group_expiry = self.config.group_expiry_s
        self.prefix = prefix
        self.keys = KeySpace(prefix)
        self.codec = MessageCodec(
            serializer_format=self.config.serializer_format,
            symmetric_encryption_keys=self.config.symmetric_encryption_keys,
            expiry_s=self.config.expiry_s,
            max_message_bytes=self.config.max_message_bytes,
        )
        # Recorded messages live for group_expiry, not expiry: an encrypted
        # one must stay readable that long (Fernet checks its age on decrypt).
        self._history_codec = MessageCodec(
            serializer_format=self.config.serializer_format,
            symmetric_encryption_keys=self.config.symmetric_encryption_keys,
            expiry_s=self.config.group_expiry_s,
            max_message_bytes=self.config.max_message_bytes,
        )
        self.client_id = uuid.uuid4().hex
        # The default team's consumer names of this instance's event loops.
        self._consumer_names = ConsumerNames(self.client_id)
        # What this instance's inbox readers (one per event loop) have read.
        self._read_ledger = ReadLedger()
        # In every name new_channel() makes, and in no other valid name.
        self._own_marker = f".{self.client_id}!"
        self.mailboxes = Mailboxes()
        self._groups = GroupMembers(self._capacities)
        self._consumed = _ConsumedCounts()
        self._valid_names: set[str] = set()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        # The state looked up last, with its loop: receive() and send() of one
        # loop skip the weak dictionary (about 0.6 us a call).
        self._last_state: tuple[asyncio.AbstractEventLoop, _LoopState] | None = None

    # Names -----------------------------------------------------------------

    def require_valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        """Channels' validation, raising :class:`InvalidChannelNameError` (a TypeError).

        Names seen before skip the regular expression: a busy consumer
        validates the same few names on every send and receive.
        """
        if not receive and type(name) is str and name in self._valid_names:
            return True
        try:
            valid = bool(super().require_valid_channel_name(name, receive))
        except TypeError as exc:
            raise InvalidChannelNameError(f"{exc} Got {name!r}.") from None
        if len(self._valid_names) >= NAME_CACHE_SIZE:
            self._valid_names.clear()
        self._valid_names.add(name)
        return valid

    def require_valid_group_name(self, name: Any) -> bool:
        try:
            return bool(super().require_valid_group_name(name))
        except TypeError as exc:
            raise InvalidChannelNameError(f"{exc} Got {name!r}.") from None

    # Loop state ------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        last = self._last_state
        if last is not None and last[0] is loop:
            return last[1]
        state = self._states.get(loop)
        if state is None:
            state = _LoopState(self)
            self._states[loop] = state
            _close_with_loop(loop, self, state)
        # One tuple, assigned at once: threads with loops of their own may race here.
        self._last_state = (loop, state)
        return state

    def _forget_state(self, loop: asyncio.AbstractEventLoop) -> None:
        self._states.pop(loop, None)
        last = self._last_state
        if last is not None and last[0] is loop:
            self._last_state = None

    # Channel layer spec ----------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-specific channel name, received by this instance."""
        if not isinstance(prefix, str):
            raise InvalidChannelNameError(f"channel prefix must be str, got {prefix!r}")
        name = f"{prefix}.{self.client_id}!{uuid.uuid4().hex}"
        self.require_valid_channel_name(name)
        return name

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message`` on ``channel``: one round trip.

        Raises :class:`ChannelFull` when ``capacity`` messages are queued,
        :class:`~streams_layer.exceptions.InvalidMessageError` /
        :class:`~streams_layer.exceptions.MessageTooLarge` for a bad message,
        :class:`~streams_layer.exceptions.LayerConnectionError` when Redis is
        unreachable.
        """
        self.require_valid_channel_name(channel)
        payload = self.codec.encode(message)
        state = self._state()
        capacity = self.get_capacity(channel)
        if is_specific(channel):
            client = client_of(channel)
            if client == self.client_id:
                if self.config.same_process_shortcut:
                    self._send_locally(channel, payload, capacity)
                    return
                # Capacity this instance's receives freed on the channel goes
                # with the send, so it never meets an outdated count (and a
                # loop sending to itself costs no give-back per message).
                # (a hold, a negative count, stays for the next give-back)
                received = self._consumed.take_positive(channel)
            else:
                received = 0
            try:
                queued = await state.shards.batcher(client).run_script(
                    INBOX_SEND,
                    [self.keys.inbox(client), self.keys.inbox_counts(client)],
                    [
                        payload,
                        self.config.expiry_ms,
                        self.config.key_ttl_s,
                        capacity,
                        channel,
                        0,
                        received,
                    ],
                )
            except BaseException:
                if received:
                    self._consumed.add(channel, received)
                raise
        else:
            queued = await state.shards.batcher(channel).run_script(
                CHAN_SEND,
                [self.keys.channel(channel)],
                [payload, self.config.expiry_ms, self.config.key_ttl_s, capacity],
            )
        if not queued:
            metrics.record(metrics.CHANNEL_FULL, channel=channel)
            raise ChannelFull(f"channel {channel!r} is at capacity ({capacity})")
        metrics.record(metrics.SENT, channel=channel)

    def _send_locally(self, channel: str, payload: bytes, capacity: int) -> None:
        """Deliver to one of this instance's own channels without a round trip.

        The message goes straight into the local buffer (decoded from its
        serialized form, so the receiver never shares objects with the
        sender), expires like any other, and ``flush`` clears it. Capacity is
        checked against the local buffer; the Redis counter is raised in the
        next coalesced capacity update (before this instance's next send), so
        group sends and other senders see the message too.
        """
        if self.mailboxes.queued(channel) >= capacity:
            metrics.record(metrics.CHANNEL_FULL, channel=channel)
            raise ChannelFull(f"channel {channel!r} is at capacity ({capacity})")
        expires_at = time.time() + self.config.expiry_s
        self.mailboxes.put(channel, self.codec.decode(payload), expires_at)
        self._give_back(Counter({channel: -1}))
        metrics.record(metrics.SENT, channel=channel)

    async def receive(self, channel: str) -> Message:
        """The next message of ``channel``; waits as long as it takes.

        Process-specific channels must belong to this instance
        (:class:`~streams_layer.exceptions.InvalidChannelNameError` otherwise).
        Cancelling a receive loses no message and delivers none twice.
        """
        self.require_valid_channel_name(channel)
        state = self._state()
        if not is_specific(channel):
            received = await state.channels.receive(channel)
            metrics.record(metrics.RECEIVED, channel=channel)
            return received
        if self._own_marker not in channel and client_of(channel) != self.client_id:
            raise InvalidChannelNameError(
                f"{channel!r} was not made by this layer's new_channel() and cannot be received"
            )
        mailboxes = self.mailboxes
        message = mailboxes.take(channel)
        if message is None:
            state.active_receives += 1
            try:
                while message is None:
                    if mailboxes.expired:
                        self._collect_expired()
                    state.reader.ensure_running()
                    waiter = mailboxes.waiter(channel)
                    if waiter is not None:
                        try:
                            handed = await waiter
                        except BaseException:
                            mailboxes.abandon(channel, waiter)
                            raise
                        if handed is not None:
                            message = handed[1]
                            break
                    message = mailboxes.take(channel)
            finally:
                state.active_receives -= 1
                state.waits += 1
                state.last_wait_ended = time.monotonic()
        if mailboxes.expired:
            self._collect_expired()
        consumed = self._consumed.add(channel, 1)
        self._give_back_in_time(state, consumed, self.get_capacity(channel))
        metrics.record(metrics.RECEIVED, channel=channel)
        return message

    # Groups ----------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (refreshing the membership's age)."""
        await self._change_group(GROUP_ADD, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no error if it was not a member."""
        await self._change_group(GROUP_DISCARD, group, channel)

    async def _change_group(self, script: Script, group: str, channel: str) -> None:
        """Run group_add.lua or group_discard.lua: both change the group's version too."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await (
            self._state()
            .shards.batcher(group)
            .run_script(
                script,
                [self.keys.group(group), self.keys.group_version(group)],
                [channel, self.config.group_expiry_s],
            )
        )

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every live member of ``group``.

        The message is serialized once and written once per destination
        stream. A member at capacity misses it; this never raises
        :class:`ChannelFull`.
        """
        self.require_valid_group_name(group)
        payload = self.codec.encode(message)
        state = self._state()
        await self._fan_out(group, await self._group_plan(group, state), payload)

    async def group_send_recorded(self, group: str, message: Message) -> str:
        """Record ``message`` in the group's history, then send it to the group.

        Members receive the message with an added ``"history_id"`` key, the
        returned stream ID. The history keeps ``history_size`` messages.
        """
        self.require_valid_group_name(group)
        # Validated before anything is written, with room for the longest ID:
        # the members' copy carries it and must not turn out too large after
        # the history holds the message.
        self.codec.encode({**message, HISTORY_ID_KEY: LONGEST_STREAM_ID})
        payload = self._history_codec.encode(message)
        state = self._state()
        stored = state.shards.batcher(group).script(
            HISTORY_ADD,
            [self.keys.history(group), self.keys.history_trimmed(group)],
            [payload, self.config.history_size, self.config.group_expiry_s],
        )
        raw_id, plan = await asyncio.gather(stored, self._group_plan(group, state))
        history_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        recorded = {**message, HISTORY_ID_KEY: history_id}
        await self._fan_out(group, plan, self.codec.encode(recorded))
        return history_id

    async def group_history(
        self, group: str, *, after: str | None = None, limit: int = 50
    ) -> GroupHistory:
        """Recorded messages of ``group``, oldest first, each with ``"history_id"``.

        With ``after``, only messages recorded after that ID. Raises
        ValueError for a malformed ``after`` or a ``limit`` outside 1..1000.
        """
        self.require_valid_group_name(group)
        if after is not None:
            parse_stream_id(after)
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 0 < limit <= MAX_HISTORY_LIMIT
        ):
            raise ValueError(f"limit must be an int from 1 to {MAX_HISTORY_LIMIT}, got {limit!r}")
        client = self._state().shards.client(group)
        key = self.keys.history(group)
        trimmed_upto: Any = None
        try:
            if after is None:
                entries: Any = list(reversed(await client.xrevrange(key, count=limit) or []))
            else:
                pipe = client.pipeline(transaction=False)
                pipe.xrange(key, min=f"({after}", count=limit)
                pipe.get(self.keys.history_trimmed(group))
                entries, trimmed_upto = await pipe.execute()
        except (*NETWORK_ERRORS, ResponseError) as exc:
            raise translate(exc) from exc
        messages = []
        for entry_id, fields in entries:
            try:
                message = self._history_codec.decode(fields[b"m"])
            except (KeyError, TypeError, MalformedEntryError) as exc:
                logger.warning("history of %s: skipping entry %r: %s", group, entry_id, exc)
                continue
            message[HISTORY_ID_KEY] = entry_id.decode()
            messages.append(message)
        try:
            complete = is_complete(after, trimmed_upto)
        except ValueError:
            logger.warning("history of %s: unreadable trim mark %r", group, trimmed_upto)
            complete = False  # nothing says what was trimmed
        return GroupHistory(messages=messages, complete=complete)

    async def _group_plan(self, group: str, state: _LoopState) -> FanOutPlan:
        """Where a message to ``group`` goes: its members added within
        ``group_expiry`` (by the server's clock), sorted by destination.

        A large group that has not changed since the last send costs a GET
        of its version (see :mod:`streams_layer.groups`); otherwise the
        members are read after the version (a kept version is never newer
        than its members), in the same round trip when no version was read
        yet. A plain ZRANGE, not a script: for 1,000 members the script's
        reply, passing through a Lua table, took 0.43-0.46 ms of Redis time
        against 0.08-0.11 ms for the ZRANGE alone. group_add removes lapsed
        members.
        """
        batcher = state.shards.batcher(group)
        version_key = self.keys.group_version(group)
        if not state.clock.synced:
            # A loop that only sends has not read the server's time yet; with
            # the local clock a skewed host would drop live members or keep
            # lapsed ones.
            state.clock.observe_time(await batcher.call("TIME"))
        since = int(state.clock.now()) - self.config.group_expiry_s
        members = ("ZRANGE", self.keys.group(group), since, "+inf", "BYSCORE", "WITHSCORES")
        if self._groups.is_kept(group):
            version = await batcher.call("GET", version_key)
            plan = self._groups.plan(group, version, since)
            if plan is not None:
                return plan
            raw = await batcher.call(*members)
        else:
            version, raw = await asyncio.gather(
                batcher.submit("GET", version_key), batcher.submit(*members)
            )
        return self._groups.store(group, version, raw, since)

    async def _fan_out(self, group: str, plan: FanOutPlan, payload: bytes) -> None:
        if not plan.normal and not plan.inboxes:
            return
        state = self._state()
        if self._consumed and any(b.client == self.client_id for b in plan.inboxes):
            # Members in this instance's own inbox: its own view of their
            # capacity is exact once pending give-backs go first (same batch).
            self._flush_consumed(state)
        futures = []
        # how many members each future writes for
        sizes: list[int] = []
        for channel in plan.normal:
            futures.append(
                state.shards.batcher(channel).script(
                    CHAN_SEND,
                    [self.keys.channel(channel)],
                    [
                        payload,
                        self.config.expiry_ms,
                        self.config.key_ttl_s,
                        self.get_capacity(channel),
                    ],
                )
            )
            sizes.append(1)
        for batch in plan.inboxes:
            futures.append(
                state.shards.batcher(batch.client).script(
                    INBOX_SEND,
                    [self.keys.inbox(batch.client), self.keys.inbox_counts(batch.client)],
                    [
                        payload,
                        self.config.expiry_ms,
                        self.config.key_ttl_s,
                        batch.capacities,
                        batch.channels,
                        1,
                        0,
                    ],
                )
            )
            sizes.append(batch.size)
        results = await asyncio.gather(*futures, return_exceptions=True)
        delivered = unreached = 0
        failed: list[BaseException] = []
        for size, result in zip(sizes, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(result)
                unreached += size
            else:
                delivered += size if int(result) < 0 else int(result)
        full = plan.size - delivered - unreached
        metrics.record(metrics.SENT, delivered, channel=group)
        metrics.record(metrics.CHANNEL_FULL, full, channel=group)
        if full:
            logger.info("group %s: %d of %d members were full", group, full, plan.size)
        if failed:
            raise failed[0]

    # Teams (streams_layer.team) and status (streams_layer.status) ----------

    def consume(self, channel: str, *, team: str, **options: Any) -> TeamConsumer:
        """A member of ``team`` on the normal channel ``channel``: at-least-once consumption.

        ``options``: ``consumer``, ``batch``, ``claim_idle_ms``,
        ``max_deliveries``, ``block_ms``, ``dead_letter_maxlen``,
        ``dead_letter_ttl_s``; see :class:`~streams_layer.team.TeamConsumer`.
        """
        return TeamConsumer(self, channel, team=team, **options)

    async def dead_letters(self, channel: str, *, limit: int = 100) -> list[DeadLetter]:
        """The dead letters of ``channel``'s teams, oldest first."""
        return await list_dead_letters(self, channel, limit=limit)

    async def replay_dead_letter(self, channel: str, dead_letter_id: str) -> str | None:
        """Send a dead letter to ``channel`` again; its new stream ID, or None if unknown."""
        return await replay_dead_letter(self, channel, dead_letter_id)

    async def status(self) -> LayerStatus:
        """Every key under ``prefix`` with its teams and consumers (see ``streams_status``)."""
        return await collect_status(self._state().shards.clients, self.keys)

    # Flush and close -------------------------------------------------------

    async def flush(self) -> None:
        """Delete every key under ``prefix`` (SCAN + UNLINK, every master) and local buffers."""
        state = self._state()
        for each in list(self._states.values()):
            # A reader reading ahead would open its deleted inbox again; the
            # loop's next receive() starts one.
            each.waits = 0
        for client in state.shards.clients:
            try:
                await _unlink_own_keys(client, self.keys)
            except NETWORK_ERRORS as exc:
                raise translate(exc) from exc
        self.mailboxes.clear()
        self._consumed.clear()
        self._groups.clear()
        self._consumer_names.forget_owed()
        for each in list(self._states.values()):
            each.reader.reset()
            each.channels.reset()

    async def close(self) -> None:
        """Stop readers and close this event loop's connections."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            return
        self._forget_state(loop)
        await self._close_state(state)

    async def _close_state(self, state: _LoopState) -> None:
        """Give back the capacity receives freed, then close ``state``."""
        given_back = self._flush_consumed(state)
        if given_back is not None:
            await asyncio.gather(given_back, return_exceptions=True)
        await state.channels.aclose()
        await state.aclose()

    async def close_pools(self) -> None:
        """channels_redis's name for :meth:`close`."""
        await self.close()

    # Capacity accounting ---------------------------------------------------

    def _capacities(self, channels: list[str]) -> str:
        """The capacity argument of inbox_send.lua: one number when all agree."""
        if not self.config.channel_capacity:
            return str(self.config.capacity)
        capacities = [str(self.get_capacity(channel)) for channel in channels]
        if len(set(capacities)) == 1:
            return capacities[0]
        return ",".join(capacities)

    def _give_back(self, taken: Counter[str]) -> None:
        """Return capacity for messages taken out of local buffers.

        Coalesced over ``GIVE_BACK_DELAY_S``: at a few thousand messages per
        second one script call returns the capacity of many (the benchmark
        measured one extra EVALSHA per message when this ran every loop tick).
        """
        self._consumed.add_all(taken)
        state = self._states.get(asyncio.get_running_loop())
        if state is not None:
            self._schedule_give_back(state)

    def _schedule_give_back(self, state: _LoopState) -> None:
        if state.give_back_timer is None:
            state.give_back_timer = asyncio.get_running_loop().call_later(
                GIVE_BACK_DELAY_S, self._flush_consumed, state
            )
            state.give_back_delayed = True

    def _give_back_in_time(self, state: _LoopState, pending: int, capacity: int) -> None:
        """Give back at once when ``pending`` counts are a GIVE_BACK_EAGER_SHARE
        of ``capacity``, else within GIVE_BACK_DELAY_S."""
        if pending * GIVE_BACK_EAGER_SHARE >= capacity:
            self._give_back_soon(state)
        else:
            self._schedule_give_back(state)

    def _give_back_soon(self, state: _LoopState) -> None:
        """Give back in the next loop iteration instead of after GIVE_BACK_DELAY_S.

        A pending retry after a failed give-back (Redis away) keeps its delay.
        """
        timer = state.give_back_timer
        if timer is not None:
            if not state.give_back_delayed:
                return
            timer.cancel()
        state.give_back_timer = asyncio.get_running_loop().call_soon(self._flush_consumed, state)
        state.give_back_delayed = False

    def _collect_expired(self) -> None:
        """Count and give back what take() found expired in local buffers
        (callers look at ``mailboxes.expired`` first: it is empty nearly always)."""
        self._dropped(self.mailboxes.collect_expired())

    def _dropped(self, dropped: Counter[str]) -> None:
        """Messages dropped unread from local buffers (expired): count them, give capacity back."""
        for channel, count in dropped.items():
            metrics.record(metrics.EXPIRED, count, channel=channel)
        self._give_back(dropped)

    def _group_read(self, held: list[str], expired: list[str], full: list[str]) -> None:
        """One group entry the inbox reader took in: hold capacity for the
        messages it buffered (given back when they are received), and count
        the entry as read (see inbox_send.lua)."""
        for channel, count in Counter(expired).items():
            metrics.record(metrics.EXPIRED, count, channel=channel)
        for channel, count in Counter(full).items():
            metrics.record(metrics.CHANNEL_FULL, count, channel=channel)
        self._consumed.add_each(held, -1)
        read = self._consumed.add(GROUP_READ_FIELD, -1)
        # Senders count entries read but not yet reported as unread: a busy
        # reader reports them as soon as a channel would its received messages.
        self._give_back_in_time(self._state(), -read, self.capacity)

    def _flush_consumed(self, state: _LoopState) -> asyncio.Future[Any] | None:
        if state.give_back_timer is not None:
            state.give_back_timer.cancel()
            state.give_back_timer = None
        if not self._consumed or state.closed:
            return None  # counts of a closed state wait for another loop's give-back
        taken = self._consumed.take_all()
        if not taken:
            return None
        counts_key = self.keys.inbox_counts(self.client_id)
        future = state.shards.batcher(self.client_id).script(
            INBOX_CONSUMED,
            [counts_key],
            [self.config.key_ttl_s, ",".join(taken), ",".join(map(str, taken.values()))],
        )
        future.add_done_callback(functools.partial(self._retry_if_failed, taken))
        return future

    def _retry_if_failed(self, taken: Counter[str], future: asyncio.Future[Any]) -> None:
        """Put the counts of a failed give-back back in line for the next one.

        A give-back lost with its connection would otherwise hold capacity
        until the counts expire (seen under CLIENT KILL in tests/test_faults.py).
        """
        if future.cancelled() or future.exception() is None:
            return
        self._consumed.add_all(taken)
        if isinstance(future.exception(), asyncio.CancelledError):
            # The round trip was cancelled: the loop is shutting down
            # (asyncio.run() cancels what is left when the program returns
            # without close()). The counts expire, or an idle reader resets them.
            logger.debug("returning capacity was cancelled at shutdown")
            return
        logger.warning("returning capacity failed (%s); will retry", future.exception())
        state = self._states.get(future.get_loop())
        if state is not None and state.give_back_timer is None and not state.closed:
            # Not every 5 ms while Redis is away (a CI run saw a hot retry loop
            # during a Sentinel failover).
            state.give_back_timer = future.get_loop().call_later(
                GIVE_BACK_RETRY_S, self._flush_consumed, state
            )
            state.give_back_delayed = False


async def _unlink_own_keys(client: Any, keys: KeySpace) -> None:
    """UNLINK every key of ``keys``'s prefix on ``client``, none of a longer prefix."""
    # A cluster's keys of one node may sit in several slots: one UNLINK each.
    cluster = isinstance(client, RedisCluster)
    batch = []
    async for key in scan_keys(client, keys.match_all):
        if keys.parse(key.decode(errors="replace") if isinstance(key, bytes) else key) is None:
            continue
        batch.append(key)
        if cluster or len(batch) >= UNLINK_BATCH:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)


def _close_with_loop(
    loop: asyncio.AbstractEventLoop, layer: RedisStreamsChannelLayer, state: _LoopState
) -> None:
    """Close the layer's connections of ``loop`` before the loop itself closes.

    ``async_to_sync`` and ``asyncio.run`` close their loop when done; without
    this the connections would be left to the garbage collector. The state is
    held here, not looked up through the layer, so it is closed even when the
    layer itself was dropped before its loop closed.
    """
    original = loop.close
    layer_ref = weakref.ref(layer)

    def close() -> None:
        owner = layer_ref()
        if owner is not None and owner._states.get(loop) is state:
            owner._forget_state(loop)
        if not state.closed and not loop.is_closed() and not loop.is_running():
            # As close() does: what receives freed is given back first, not
            # left to a timer that would fire on a closing loop (or never).
            closing = owner._close_state(state) if owner is not None else state.aclose()
            try:
                loop.run_until_complete(closing)
            except (StreamsLayerError, RuntimeError, *NETWORK_ERRORS) as exc:
                logger.debug("closing connections with the loop failed: %r", exc)
        original()

    try:
        loop.close = close  # type: ignore[method-assign]
    except AttributeError:
        logger.debug("event loop %r cannot be patched; close the layer explicitly", loop)
