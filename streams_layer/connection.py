"""Redis clients for the layer: standalone, Sentinel, Cluster, and shards.

One :class:`ShardSet` per event loop (redis-py's asyncio clients belong to the
loop that created them). Non-blocking commands go through a
:class:`CommandBatcher`, which sends every command issued in the same loop
iteration in one pipelined round trip; blocking reads use a connection of
their own (kept between reads, :class:`KeptConnections`), so they never hold
one that sends need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from channels_redis.utils import create_pool
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # hiredis is a dependency (redis[hiredis]), but redis-py works without it
    from hiredis import pack_command
except ImportError:  # pragma: no cover
    pack_command = None  # type: ignore[assignment]

try:  # redis-py 7 and newer
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py has no such setting
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from .config import (
    BLOCK_LATE_S,
    BLOCK_TIMEOUT_SHARE,
    CLOSE_DRAIN_S,
    DEFAULT_SOCKET_TIMEOUT_S,
    KEPT_CONNECTIONS_MAX,
)
from .exceptions import LayerConnectionError, RedisCommandError
from .scripts import BY_SHA, LOAD_ALL, Script

logger = logging.getLogger(__name__)

Client = aioredis.Redis | RedisCluster
CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}
NETWORK_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
# The attribute exchange() marks a connection with: the socket (its writer)
# that already carried the connection's ``on_connect`` commands.
_PRELUDE_SENT_ON = "_streams_layer_prelude_sent_on"
SCAN_COUNT = 1000


def is_cluster(host: dict[str, Any]) -> bool:
    """Whether a decoded host entry asks for Redis Cluster."""
    address = host.get("address")
    return bool(host.get("cluster")) or (
        isinstance(address, str) and address.startswith(tuple(CLUSTER_SCHEMES))
    )


def make_client(host: dict[str, Any]) -> Client:
    """Build a redis-py asyncio client for one decoded ``hosts`` entry.

    No network I/O happens here; connections open on first use.
    """
    kwargs = dict(host)
    kwargs.pop("cluster", None)
    kwargs.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT_S)
    if MaintNotificationsConfig is not None:
        # redis-py 8's default ("auto") switches off the pool's check for
        # connections the server closed while they sat idle: after a restart
        # or CLIENT KILL every pooled connection then failed one command
        # (CI saw a group_send fail that way). The layer speaks RESP2, which
        # carries no maintenance notifications anyway.
        kwargs.setdefault("maint_notifications_config", MaintNotificationsConfig(enabled=False))
    if is_cluster(host) and "address" not in kwargs:
        # {"host": ..., "port": ..., "cluster": True}: a startup node by name.
        return RedisCluster(**kwargs)
    if is_cluster(host):
        address = str(kwargs.pop("address"))
        for scheme, plain in CLUSTER_SCHEMES.items():
            if address.startswith(scheme):
                address = plain + address[len(scheme) :]
        return RedisCluster.from_url(address, **kwargs)
    if "address" in kwargs:
        address = kwargs.pop("address")
        return aioredis.Redis.from_url(address, **kwargs)
    if "master_name" in kwargs:
        # from_pool: the client owns the pool, so aclose() disconnects it.
        return aioredis.Redis.from_pool(create_pool(kwargs))
    return aioredis.Redis(**kwargs)


async def scan_keys(client: Client, pattern: str) -> AsyncIterator[Any]:
    """Every key matching ``pattern``: SCAN (never KEYS), on every master of a cluster."""
    if not isinstance(client, RedisCluster):
        async for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            yield key
        return
    for node in client.get_primaries():
        cursor = 0
        while True:
            # A cluster client's SCAN answers ({node name: cursor}, keys).
            reply: Any = await client.scan(
                cursor, match=pattern, count=SCAN_COUNT, target_nodes=node
            )
            cursors, keys = reply
            cursor = cursors[node.name]
            for key in keys:
                yield key
            if not cursor:
                break


def raise_if_cancelling() -> None:
    """Re-raise a pending cancellation that a caught error may have masked.

    A retry loop that catches connection errors must not outlive a cancel:
    redis-py may turn an interrupted read into a ConnectionError, and
    ``asyncio.wait_for`` then waits for a task that never ends.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def translate(exc: BaseException) -> BaseException:
    """Map a redis-py exception onto the layer's exception tree."""
    if isinstance(exc, NETWORK_ERRORS):
        error: BaseException = LayerConnectionError(f"Redis unreachable: {exc}")
    elif isinstance(exc, ResponseError):
        error = RedisCommandError(f"Redis refused the command: {exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


class CommandBatcher:
    """Coalesces the commands of one event loop into pipelined round trips.

    The first command of a quiet period is sent at once; commands issued while
    a round trip is in flight wait for it and then go together in the next
    one. A script unknown to the server (after a restart or failover) is sent
    again in full with EVAL.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._running = False
        # Held so the drain task is not garbage-collected while it runs.
        self._task: asyncio.Task[None] | None = None
        # The connection of a standalone or Sentinel client (see _send).
        self._conn: Any = None

    def submit(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command (``"EVALSHA", sha, numkeys, ...`` or any other).

        Returns a future for its reply; errors arrive translated (see
        :func:`translate`). Must be called from the batcher's event loop.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        return future

    async def call(self, *args: Any) -> Any:
        """Run one command and return its reply.

        When nothing is in flight the caller sends its command itself: a
        sequential sender pays no task switch per command. Commands arriving
        meanwhile queue up and go together once it returns.
        """
        if self._running:
            return await self.submit(*args)
        self._running = True
        try:
            results = await self._execute([args])
        except BaseException as exc:
            error = translate(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._hand_over()
        if isinstance(results[0], BaseException):
            raise translate(results[0])
        return results[0]

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Call a Lua script by SHA and return its reply (see :meth:`call`)."""
        return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)

    def _hand_over(self) -> None:
        if self._queue:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._running = False

    def script(
        self, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> asyncio.Future[Any]:
        """Queue a Lua script call by SHA; returns a future for its reply."""
        return self.submit("EVALSHA", script.sha, len(keys), *keys, *args)

    async def drained(self) -> None:
        """Return once no command of this batcher is queued or in flight."""
        while self._running:
            task = self._task
            if task is not None and not task.done() and task is not asyncio.current_task():
                await asyncio.wait({task})
            else:  # a caller sending its own command (see call()) holds the turn
                await asyncio.sleep(0.001)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._run(batch)
        finally:
            self._running = False

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute([args for args, _ in batch])
        except GeneratorExit:
            # Closed by the garbage collector after its loop closed (a program
            # that ended without close()): nobody waits for these futures, and
            # completing one would call the closed loop.
            raise
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(translate(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(translate(result))
            else:
                future.set_result(result)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        results = await self._send(commands)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            logger.debug("reloading %d scripts after NOSCRIPT", len(missing))
            retried = await self._send([_as_eval(commands[i]) for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        return results

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if isinstance(self._client, RedisCluster):
            return await _run_on_cluster(self._client, commands)
        if self._conn is None:
            # Held for the batcher's life, never handed back to the pool:
            # pool checkout and release took about a seventh of a sequential
            # sender's profiled time, and a connection taken from the pool
            # again at shutdown (KeptConnections) left a give-back's round
            # trip pending when a test's loop closed. Closing the client
            # closes it; exchange() reopens it after a fault.
            pool: Any = self._client.connection_pool
            self._conn = await pool.get_connection()
        return await exchange(self._conn, commands, on_connect=LOAD_ALL)


async def _run_on_cluster(client: RedisCluster, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    if len(commands) == 1:
        try:
            return [await client.execute_command(*commands[0])]
        except ResponseError as exc:
            return [exc]
    pipe = client.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)
    return list(await pipe.execute(raise_on_error=False))


class KeptConnections:
    """Connections of one client that stay with the layer between reads.

    Inbox readers and normal-channel receives each use a connection of their
    own while a blocking read is in flight (the command batcher holds one of
    its own). Taking it from redis-py's pool every time costs a lock and a
    probe of the socket; these are kept here instead (at most
    KEPT_CONNECTIONS_MAX idle ones) and checked for a peer's close by
    :func:`exchange` before use. A cluster client goes through redis-py's
    pipeline, which routes by slot and parses replies with its callbacks
    (:func:`stream_entries` reads either reply form).
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._idle: list[Any] = []

    def block_ms(self, block_ms: int) -> int:
        """How long a blocking read sent through :meth:`run` may block: as
        asked, since :meth:`run` allows for it (``blocking_s``), except on a
        cluster client, whose replies redis-py reads (:func:`capped_block_ms`)."""
        if isinstance(self._client, RedisCluster):
            return capped_block_ms(self._client, block_ms)
        return block_ms

    async def run(
        self, commands: Sequence[tuple[Any, ...]], *, blocking_s: float = 0.0
    ) -> list[Any]:
        """Send ``commands`` in one round trip; their replies, error replies as exceptions.

        ``blocking_s``: how long a blocking read among them may wait on the
        server, added to the socket timeout (a ``socket_timeout`` below
        ``block_ms`` would otherwise end every idle read with a timeout).
        """
        if isinstance(self._client, RedisCluster):
            return await _run_on_cluster(self._client, commands)
        pool: Any = self._client.connection_pool
        conn = self._idle.pop() if self._idle else await pool.get_connection()
        try:
            results = await exchange(conn, commands, blocking_s=blocking_s)
        except GeneratorExit:
            raise  # see exchange()
        except BaseException:
            await pool.release(conn)  # exchange() closed it
            raise
        if len(self._idle) < KEPT_CONNECTIONS_MAX:
            self._idle.append(conn)
        else:
            await pool.release(conn)
        return results

    async def release(self) -> None:
        """Give the kept connections back to the pool."""
        if isinstance(self._client, RedisCluster):
            return
        pool: Any = self._client.connection_pool
        idle, self._idle = self._idle, []
        for conn in idle:
            await pool.release(conn)


async def exchange(
    conn: Any,
    commands: Sequence[tuple[Any, ...]],
    *,
    blocking_s: float = 0.0,
    on_connect: Sequence[tuple[Any, ...]] = (),
) -> list[Any]:
    """Write ``commands`` in one go on ``conn`` and read their raw replies.

    ``on_connect``: commands sent ahead of them on the first exchange over
    each socket of ``conn`` (the one the pool opened, and every reopened
    one); their replies are read and dropped.

    The layer's commands (scripts, stream reads, ZREM) need none of the reply
    callbacks, retries or per-command bookkeeping of redis-py's
    ``execute_command`` and pipeline (a sequential two-process send loop went
    from ~5.9k to ~6.1k msg/s without them, within this machine's noise).
    Error replies come back as exceptions in the list. A connection the
    server closed while idle is opened again first; one interrupted before
    every reply was read (an error, a cancel) is closed, so no reply is ever
    left unread on it.

    Uses redis-py's private ``_reader``/``_writer`` (the connection's asyncio
    streams); without them it falls back to ``send_packed_command``.
    """
    try:
        reader: Any = getattr(conn, "_reader", None)
        writer: Any = getattr(conn, "_writer", None)
        if writer is not None and _closed_by_peer(reader, writer):
            await conn.disconnect()
            writer = None
        if writer is None:
            # connect(), not send_packed_command's own connecting: a Sentinel
            # connection asks the sentinels for the master only in connect().
            await conn.connect()
            writer = getattr(conn, "_writer", None)
        fresh = bool(on_connect) and getattr(conn, _PRELUDE_SENT_ON, None) is not writer
        ahead: Sequence[tuple[Any, ...]] = on_connect if fresh else ()
        packed = _pack(conn, [*ahead, *commands]) if ahead else _pack(conn, commands)
        if writer is not None and writer.transport.get_write_buffer_size() == 0:
            # Into an empty socket buffer a write never waits; redis-py's
            # send_packed_command wraps it in asyncio.wait_for, which on
            # Python 3.11 creates a task per command (the same loop went
            # from ~6.1k to ~7.3k msg/s writing directly).
            writer.writelines(packed)
        else:
            await conn.send_packed_command(packed, check_health=False)
        results = await _read_replies(conn, len(ahead) + len(commands), blocking_s)
        if ahead:
            setattr(conn, _PRELUDE_SENT_ON, writer)
            results = results[len(ahead) :]
    except GeneratorExit:
        raise  # closed by the garbage collector with its loop gone: nothing to await
    except BaseException:
        await conn.disconnect()
        raise
    if any(isinstance(result, ReadOnlyError) for result in results):
        # A master demoted to a replica (the connection stays up): open it
        # again, which makes a Sentinel connection ask for the new master.
        await conn.disconnect()
    return results


async def _read_replies(conn: Any, count: int, blocking_s: float = 0.0) -> list[Any]:
    """``count`` replies from ``conn``, error replies as exception values.

    They may take the socket timeout plus ``blocking_s``.

    Reads through the connection's parser under one socket timeout for the
    whole batch: redis-py's ``read_response`` enters a timeout context and
    formats the host's name for every reply, a quarter of the profiled time
    of 32 tasks sending concurrently. Falls back to ``read_response`` when
    the parser is not where redis-py keeps it.
    """
    results: list[Any] = []
    timeout_s = conn.socket_timeout
    if timeout_s is not None and blocking_s:
        # Redis ends a blocking read on its cron tick: up to 1 / hz late.
        timeout_s += blocking_s + BLOCK_LATE_S
    parser = getattr(conn, "_parser", None)
    if parser is None or not hasattr(parser, "read_response"):
        for _ in range(count):
            try:
                results.append(await conn.read_response(timeout=timeout_s))
            except ResponseError as exc:
                results.append(exc)
        return results
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(count):
                results.append(await parser.read_response())
    except TimeoutError:
        raise RedisTimeoutError(f"Timeout reading from {_address(conn)}") from None
    except OSError as exc:
        raise RedisConnectionError(f"Error while reading from {_address(conn)}: {exc}") from exc
    return results


def _address(conn: Any) -> str:
    path = getattr(conn, "path", None)
    return str(path) if path else f"{getattr(conn, 'host', '?')}:{getattr(conn, 'port', '?')}"


def _closed_by_peer(reader: Any, writer: Any) -> bool:
    """Whether a connection's streams saw the server close it (EOF, reset) while idle."""
    return bool(
        reader is None
        or reader.at_eof()
        or reader.exception() is not None
        or writer.transport.is_closing()
    )


StreamEntry = tuple[bytes, "dict[bytes, bytes] | None"]


def stream_entries(reply: Any) -> list[StreamEntry]:
    """The entries of an XREAD/XREADGROUP reply for one stream.

    Takes the raw RESP3 form (``{key: [[id, [field, value, ...]], ...]}``),
    the raw RESP2 form (``[[key, [...]]]``) and redis-py's parsed form (fields
    as a dict). An entry trimmed while pending comes back with None fields.
    """
    if not reply:
        return []
    entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    out: list[StreamEntry] = []
    for entry_id, raw in entries:
        fields = (
            raw
            if raw is None or isinstance(raw, dict)
            else dict(zip(raw[::2], raw[1::2], strict=False))
        )
        out.append((entry_id, fields))
    return out


def _pack(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """RESP for ``commands``: hiredis's C packer (about 7x faster than redis-py's
    Python one for a send script's arguments), else redis-py's."""
    if pack_command is not None:
        try:
            return [pack_command(args) for args in commands]
        except TypeError:  # an argument type hiredis does not pack
            pass
    packed: list[bytes] = conn.pack_commands(commands)
    return packed


def _as_eval(args: tuple[Any, ...]) -> tuple[Any, ...]:
    if args and args[0] == "EVALSHA":
        return ("EVAL", BY_SHA[args[1]].source, *args[2:])
    return args


def capped_block_ms(client: Client, block_ms: int) -> int:
    """``block_ms`` for a blocking read that redis-py reads (a cluster
    client's, a team's): at most half the socket timeout, within which
    redis-py wants the reply (a longer block would end every idle read in a
    timeout and a reconnect; Redis also ends a block up to 1 / hz late)."""
    if isinstance(client, RedisCluster):
        kwargs: Any = client.nodes_manager.connection_kwargs
    else:
        kwargs = client.connection_pool.connection_kwargs
    timeout_s = kwargs.get("socket_timeout")
    if timeout_s is None:
        return block_ms
    return max(1, min(block_ms, int(float(timeout_s) * 1000 * BLOCK_TIMEOUT_SHARE)))


class ServerClock:
    """Redis's time as seen from here, so expiry follows the server's clock.

    Stream IDs carry the server's milliseconds; comparing them with the local
    clock would let a skewed host deliver expired messages.
    """

    def __init__(self) -> None:
        self.offset_s = 0.0
        # Whether a server timestamp was seen yet (until then the offset is a guess: 0).
        self.synced = False

    def observe(self, server_ms: int) -> None:
        """Record a server timestamp read just now."""
        self.offset_s = server_ms / 1000 - time.time()
        self.synced = True

    def observe_time(self, reply: Any) -> None:
        """Record the reply of a ``TIME`` command read just now."""
        seconds, micros = reply
        self.observe(int(seconds) * 1000 + int(micros) // 1000)

    def now(self) -> float:
        """The server's current time in seconds."""
        return time.time() + self.offset_s

    def to_local(self, server_s: float) -> float:
        """A server time as a local ``time.time()`` value."""
        return server_s - self.offset_s


class ShardSet:
    """The clients of one event loop: one per ``hosts`` entry, keys routed by hash tag."""

    def __init__(self, hosts: Sequence[dict[str, Any]]) -> None:
        self.clients: list[Client] = [make_client(h) for h in hosts]
        self.batchers = [CommandBatcher(c) for c in self.clients]
        self.kept = [KeptConnections(c) for c in self.clients]

    def index(self, tag: str) -> int:
        """Stable shard number of a hash tag (CRC32, as channels_redis does)."""
        if len(self.clients) == 1:
            return 0
        return zlib.crc32(tag.encode()) % len(self.clients)

    def client(self, tag: str) -> Client:
        return self.clients[self.index(tag)]

    def batcher(self, tag: str) -> CommandBatcher:
        return self.batchers[self.index(tag)]

    def connections(self, tag: str) -> KeptConnections:
        return self.kept[self.index(tag)]

    async def aclose(self) -> None:
        """Close every client, ignoring a server that has gone away.

        Commands already queued (a capacity give-back, say) are answered
        first, for at most CLOSE_DRAIN_S: closing the clients under them
        turned them into "Connection closed by server" errors.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(b.drained() for b in self.batchers)), CLOSE_DRAIN_S
            )
        for client, kept in zip(self.clients, self.kept, strict=True):
            try:
                await kept.release()
                await client.aclose()
                await _close_sentinels(client)
            except NETWORK_ERRORS as exc:
                logger.debug("closing a client failed: %r", exc)


async def _close_sentinels(client: Client) -> None:
    """Close the connections a Sentinel pool holds to the sentinels themselves."""
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, aioredis.sentinel.SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()
