"""Pytest plugin: Redis Cluster, Sentinel, TLS and ACL topologies for the tests.

Registered from ``tests/conftest.py`` with ``pytest_plugins = ["tests.topologies"]``.

Fixtures (each topology is started once per session, on loopback ports, by
:mod:`devtools.redis_topologies`, and stopped by pid at the end):

- ``redis_cluster``: 3 masters + 3 replicas; shared, so tests that kill
  nodes use ``own_cluster`` instead (a fresh cluster, about 2 s to start).
- ``redis_sentinel`` / ``own_sentinel``: 1 master, 1 replica, 3 sentinels.
- ``redis_tls``: a TLS-only server requiring client certificates.
- ``redis_acl``: a server whose default user needs a password, for ACL users.

Choosing the topology of the whole suite: ``--topology=cluster`` (or the
environment variable ``STREAMS_LAYER_TEST_TOPOLOGY=cluster``) makes
``topology_url`` the cluster's ``redis+cluster://`` URL and
``topology_client`` a ``redis.asyncio.RedisCluster``; with the default
``standalone`` they are the session's plain server and client. The layer's
``redis_url``/``redis_client`` fixtures follow them when they are defined as
``topology_url``/``topology_client`` (see ``docs/deployment.md``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from devtools.redis_servers import RedisServer
from devtools.redis_topologies import (
    AsyncClient,
    RedisAclServer,
    RedisCluster,
    RedisSentinel,
    RedisTlsServer,
    async_client,
)

TOPOLOGY_ENV = "STREAMS_LAYER_TEST_TOPOLOGY"
TOPOLOGY_OPTION = "--topology"
STANDALONE = "standalone"
CLUSTER = "cluster"
TOPOLOGIES = (STANDALONE, CLUSTER)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--topology``: the Redis topology behind ``topology_url``."""
    parser.addoption(
        TOPOLOGY_OPTION,
        choices=TOPOLOGIES,
        default=None,
        help=(
            "Redis topology for the layer tests: standalone (default) or cluster "
            f"(3 masters + 3 replicas); the {TOPOLOGY_ENV} environment variable also sets it."
        ),
    )


def selected_topology(config: pytest.Config) -> str:
    """The topology chosen by ``--topology`` or ``STREAMS_LAYER_TEST_TOPOLOGY``.

    Raises:
        pytest.UsageError: the environment variable names no known topology.
    """
    chosen = config.getoption(TOPOLOGY_OPTION)
    if chosen is not None:
        return str(chosen)
    from_env = os.environ.get(TOPOLOGY_ENV, STANDALONE)
    if from_env not in TOPOLOGIES:
        msg = f"{TOPOLOGY_ENV}={from_env!r}: expected one of {', '.join(TOPOLOGIES)}"
        raise pytest.UsageError(msg)
    return from_env


def pytest_report_header(config: pytest.Config) -> str:
    """Name the topology in the run's header, so a report says what it ran against."""
    return f"redis topology: {selected_topology(config)}"


# -- topologies ----------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 6-node cluster (3 masters, 3 replicas) shared by the session; never kill its nodes."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A fresh 6-node cluster of this test's own, for tests that kill masters."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """Master, replica and 3 sentinels shared by the session; never kill its master."""
    with RedisSentinel() as sentinel:
        yield sentinel


@pytest.fixture
def own_sentinel() -> Iterator[RedisSentinel]:
    """A fresh sentinel topology of this test's own, for failover tests."""
    with RedisSentinel() as sentinel:
        yield sentinel


@pytest.fixture(scope="session")
def redis_tls() -> Iterator[RedisTlsServer]:
    """A TLS-only server (client certificates required), certificates made by openssl."""
    with RedisTlsServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_acl() -> Iterator[RedisAclServer]:
    """A server whose default user needs a password; tests add restricted users."""
    with RedisAclServer() as server:
        yield server


# -- the suite's topology ------------------------------------------------------


@pytest.fixture(scope="session")
def topology(request: pytest.FixtureRequest) -> str:
    """``"standalone"`` or ``"cluster"``: what ``topology_url`` points at."""
    return selected_topology(request.config)


@pytest.fixture(scope="session")
def topology_url(request: pytest.FixtureRequest, topology: str) -> str:
    """The layer's ``hosts`` entry for the selected topology.

    ``redis://127.0.0.1:PORT/0`` of the session's server (conftest's
    ``redis_server``), or ``redis+cluster://127.0.0.1:PORT`` of ``redis_cluster``.
    """
    if topology == CLUSTER:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
async def topology_client(topology_url: str) -> AsyncIterator[AsyncClient]:
    """A redis-py asyncio client of the selected topology, for asserting through Redis."""
    client = async_client(topology_url)
    try:
        yield client
    finally:
        await client.aclose()
