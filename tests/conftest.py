"""Fixtures shared by the whole test suite.

Every test that needs Redis talks to a ``redis-server`` that these fixtures
started themselves on a free loopback port (see ``devtools.redis_servers``);
none of them touches a Redis it did not start. If no ``redis-server`` can be
started, the fixtures raise and the tests that use them error out with a
message saying how to get one: they are never skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis.asyncio

from devtools.redis_servers import RedisServer
from devtools.redis_topologies import async_client
from tests.layer_helpers import LayerFactory

pytest_plugins = ["tests.topologies"]

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One standalone Redis server for the whole run; tests share it by key prefix."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(topology_url: str) -> str:
    """The URL of the session's Redis server, ``redis://127.0.0.1:PORT/0``.

    Under ``--topology=cluster`` it is a 6-node cluster's ``redis+cluster://``
    URL instead (see ``tests/topologies.py``).
    """
    return topology_url


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so that tests sharing a server never collide."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A fresh private Redis server for tests that restart, kill or pause it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A redis-py asyncio client to the session's server, for asserting through Redis itself."""
    # A RedisCluster under --topology=cluster: it has every command the tests use.
    client = cast("redis.asyncio.Redis", async_client(redis_url))
    try:
        yield client
    finally:
        await client.aclose()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail, rather than skip, browser tests when there is no browser to drive."""
    if item.get_closest_marker("browser") is not None and not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: browser tests need Debian's chromium "
            "(`apt-get install chromium`, which `make browser-deps` runs as root).",
            pytrace=False,
        )


@pytest.fixture
async def make_layer(redis_url: str, prefix: str) -> AsyncIterator[LayerFactory]:
    """Builds layers on the test's Redis and prefix; closes them after the test."""
    factory = LayerFactory([redis_url], prefix)
    yield factory
    await factory.aclose()
