"""The layer's own command path (streams_layer.connection.exchange) on a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio

from devtools.redis_servers import RedisServer
from streams_layer.connection import CommandBatcher, exchange, make_client, stream_entries


async def test_exchange_returns_raw_replies_and_error_replies_in_order(
    own_redis: RedisServer,
) -> None:
    client = make_client({"address": own_redis.url})
    assert isinstance(client, redis.asyncio.Redis)
    pool: Any = client.connection_pool
    conn = await pool.get_connection()
    try:
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
    finally:
        await pool.release(conn)
        await client.aclose()


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
