"""The layer's own command path (streams_layer.connection.exchange) on a real server."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from devtools.redis_servers import RedisServer
from streams_layer.config import BLOCK_LATE_S
from streams_layer.connection import CommandBatcher, exchange, make_client, stream_entries
from streams_layer.exceptions import RedisCommandError

# How late a timed-out read may end on a loaded machine.
TIMEOUT_SLACK_S = 0.35


@contextlib.asynccontextmanager
async def pooled_connections(url: str, count: int = 1, **options: Any) -> AsyncIterator[list[Any]]:
    """``count`` connections from a standalone client's pool, handed back at the end."""
    client = make_client({"address": url, **options})
    assert isinstance(client, redis.asyncio.Redis)
    pool: Any = client.connection_pool
    conns = [await pool.get_connection() for _ in range(count)]
    try:
        yield conns
    finally:
        for conn in conns:
            await pool.release(conn)
        await client.aclose()


async def test_exchange_returns_raw_replies_and_error_replies_in_order(
    own_redis: RedisServer,
) -> None:
    async with pooled_connections(own_redis.url) as (conn,):
        replies = await exchange(
            conn,
            [("SET", "k", "v"), ("INCR", "k"), ("GET", "k"), ("XADD", "s", "*", "f", "x")],
        )
        assert replies[0] is True or replies[0] == b"OK"
        assert isinstance(replies[1], redis.exceptions.ResponseError)
        assert replies[2] == b"v"
        assert isinstance(replies[3], bytes)
        read = await exchange(conn, [("XREAD", "COUNT", 5, "STREAMS", "s", "0")])
        assert stream_entries(read[0]) == [(replies[3], {b"f": b"x"})]


async def test_a_held_connection_killed_by_the_server_is_opened_again(
    own_redis: RedisServer,
) -> None:
    """The batcher keeps one connection; after CLIENT KILL its next command still works."""
    client = make_client({"address": own_redis.url})
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    batcher = CommandBatcher(client)
    try:
        assert await batcher.call("PING") in (True, b"PONG")
        assert int(await admin.client_kill_filter(_type="normal", skipme=True)) >= 1
        await asyncio.sleep(0.2)  # the EOF reaches the idle connection
        for _ in range(3):
            assert await batcher.call("PING") in (True, b"PONG")
    finally:
        await admin.aclose()
        await client.aclose()


async def test_a_command_cancelled_mid_reply_leaves_no_reply_behind(
    own_redis: RedisServer,
) -> None:
    """A cancelled exchange closes its connection, so the next command reads its own reply."""
    client = make_client({"address": own_redis.url})
    batcher = CommandBatcher(client)
    try:
        blocked = asyncio.ensure_future(batcher.call("BLPOP", "nothing", 5))
        await asyncio.sleep(0.1)
        blocked.cancel()
        await asyncio.gather(blocked, return_exceptions=True)
        assert await batcher.call("ECHO", "mine") == b"mine"
    finally:
        await client.aclose()


LEFT_BEHIND = """
import asyncio, gc, sys
from streams_layer.connection import CommandBatcher, make_client
loop = asyncio.new_event_loop()
batcher = CommandBatcher(make_client({"address": sys.argv[1]}))
async def start():
    batcher.submit("BLPOP", "nothing-here", "0.5")
    await asyncio.sleep(0.05)  # the task has written and awaits the reply
loop.run_until_complete(start())
loop.close()
del batcher, loop
gc.collect()
"""


def test_a_round_trip_left_behind_by_a_closed_loop_is_collected_quietly(
    own_redis: RedisServer,
) -> None:
    """A program that ends without close() may leave the batcher's task mid
    round trip when its loop closes; collecting it must neither complete
    futures on the closed loop nor await anything ("Exception ignored ...").
    In a child process: pytest's own hooks change when the task is collected."""
    child = subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", "-c", LEFT_BEHIND, own_redis.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert "Exception ignored" not in child.stderr, child.stderr


async def test_a_connection_that_meets_readonly_is_opened_again(own_redis: RedisServer) -> None:
    """A master demoted to a replica answers writes with READONLY while the
    connection stays up; opening it again is what makes a Sentinel
    connection ask the sentinels for the new master (as redis-py does)."""
    client = make_client({"address": own_redis.url})
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    batcher = CommandBatcher(client)
    try:
        with RedisServer() as new_master:
            first_id = await batcher.call("CLIENT", "ID")
            await admin.replicaof(new_master.host, new_master.port)
            with pytest.raises(RedisCommandError, match="read only replica"):
                await batcher.call("SET", "k", "v")
            assert await batcher.call("CLIENT", "ID") != first_id
            await admin.replicaof("NO", "ONE")
            assert await batcher.call("SET", "k", "v") in (True, b"OK")
    finally:
        await admin.aclose()
        await client.aclose()


@pytest.mark.parametrize("blocking", [False, True])
async def test_a_read_from_a_frozen_server_times_out_at_its_deadline(
    own_redis: RedisServer, blocking: bool
) -> None:
    """A command, or a blocking read past its block time, that gets no reply
    ends with a timeout once socket_timeout (plus the block time) has passed,
    and the connection works again once the server does."""
    timeout_s, block_s = 0.4, 0.3
    command = (
        ("XREAD", "BLOCK", int(block_s * 1000), "STREAMS", "s", "$") if blocking else ("PING",)
    )
    expected_s = timeout_s + (block_s + BLOCK_LATE_S if blocking else 0)
    async with pooled_connections(own_redis.url, socket_timeout=timeout_s) as (conn,):
        await exchange(conn, [("PING",)])
        await asyncio.to_thread(own_redis.pause)
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError, match="Timeout reading"):
                await exchange(conn, [command], blocking_s=block_s if blocking else 0.0)
            waited = time.monotonic() - started
        finally:
            await asyncio.to_thread(own_redis.resume)
        assert expected_s <= waited < expected_s + TIMEOUT_SLACK_S, waited
        assert await exchange(conn, [("PING",)]) in ([True], [b"PONG"])


async def test_a_hanging_command_times_out_at_its_own_deadline_beside_a_long_blocking_read(
    own_redis: RedisServer,
) -> None:
    """A command that hangs while a long blocking read is in flight on
    another connection ends at its own deadline, not the read's."""
    timeout_s = 0.4
    async with pooled_connections(own_redis.url, 2, socket_timeout=timeout_s) as conns:
        blocked, hanging = conns
        await exchange(hanging, [("PING",)])
        long_read = asyncio.ensure_future(
            exchange(blocked, [("XREAD", "BLOCK", 5000, "STREAMS", "s", "$")], blocking_s=5.0)
        )
        try:
            # The blocking read is due 5.65 s after it started; the PING's
            # own timeout is what must end it.
            await asyncio.sleep(timeout_s + 0.2)
            await asyncio.to_thread(own_redis.pause)
            try:
                started = time.monotonic()
                with pytest.raises(redis.exceptions.TimeoutError):
                    await exchange(hanging, [("PING",)])
                waited = time.monotonic() - started
            finally:
                await asyncio.to_thread(own_redis.resume)
            assert timeout_s <= waited < timeout_s + TIMEOUT_SLACK_S, waited
        finally:
            long_read.cancel()
            await asyncio.gather(long_read, return_exceptions=True)
