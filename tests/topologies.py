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

Tests that only make sense on one standalone server carry
``@pytest.mark.standalone_only(reason="...")``; under ``--topology=cluster``
they are skipped with that reason, which ``-ra`` lists. Tests that use the
``own_redis`` fixture (a private standalone server they restart, kill or
pause) are marked so automatically, and so are tests that use no fixture of
the selected topology at all: they run in the standalone run, and the cluster
run would only repeat them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
FAILOVER_NODE_TIMEOUT_MS = 500
STANDALONE_ONLY = "standalone_only"
OWN_REDIS_FIXTURE = "own_redis"
OWN_REDIS_REASON = (
    "restarts, kills or pauses a private standalone server (own_redis); runs in the standalone run"
)
# Every fixture that reaches the selected topology (redis_url, redis_client,
# topology_client) depends on this one.
TOPOLOGY_FIXTURE = "topology_url"
NO_TOPOLOGY_REASON = (
    "uses no fixture of the selected topology (redis_url, redis_client); "
    "the cluster run would repeat the standalone run"
)


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


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``standalone_only`` marker (the suite runs with ``--strict-markers``)."""
    config.addinivalue_line(
        "markers",
        f"{STANDALONE_ONLY}(reason): skipped under --topology=cluster, with the reason given",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--topology=cluster``, skip ``standalone_only`` tests, saying why."""
    if selected_topology(config) == STANDALONE:
        return
    for item in items:
        marker = item.get_closest_marker(STANDALONE_ONLY)
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else None)
            if not reason:
                msg = f"{item.nodeid}: @pytest.mark.{STANDALONE_ONLY} needs a reason"
                raise pytest.UsageError(msg)
        elif OWN_REDIS_FIXTURE in getattr(item, "fixturenames", ()):
            reason = OWN_REDIS_REASON
        elif TOPOLOGY_FIXTURE not in getattr(item, "fixturenames", ()):
            reason = NO_TOPOLOGY_REASON
        else:
            continue
        item.add_marker(pytest.mark.skip(reason=f"standalone run only: {reason}"))


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
    """A fresh 6-node cluster of this test's own, for tests that kill masters.

    Its ``cluster-node-timeout`` is ``FAILOVER_NODE_TIMEOUT_MS``: Redis's own
    failover (detection + replica election) takes about node-timeout + 1.5 s,
    which is most of the write gap the failover tests measure.
    """
    with RedisCluster(node_timeout_ms=FAILOVER_NODE_TIMEOUT_MS) as cluster:
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


# -- steady traffic across a failover ------------------------------------------

SEND_INTERVAL_S = 0.005
RETRY_DELAY_S = 0.02


@dataclass
class SendLog:
    """Start and end (monotonic seconds) of every successful send, and the errors seen."""

    ok: list[tuple[float, float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def first_ok_started_after(self, moment: float) -> float | None:
        """End time of the first successful send started at or after ``moment``."""
        return next((end for start, end, _ in self.ok if start >= moment), None)

    def numbers(self) -> set[int]:
        """The numbers of the messages that were sent successfully."""
        return {number for _, _, number in self.ok}


@dataclass
class FailoverTraffic:
    """Steady send/receive, group and team traffic between two layers, for failover tests.

    ``sender`` sends numbered messages, every ``SEND_INTERVAL_S``, to the
    normal channel ``busy`` (``receiver.receive``d), to the group ``room``
    (whose member is one of ``receiver``'s specific channels) and to the team
    channel ``work`` (consumed by ``receiver.consume(..., team="t")``, which
    acknowledges after recording). Errors are recorded and retried, never
    raised: the test asserts on what arrived and when.
    """

    sender: Any
    receiver: Any
    busy: str
    work: str
    room: str = "room"
    busy_sent: SendLog = field(default_factory=SendLog)
    group_sent: SendLog = field(default_factory=SendLog)
    work_sent: SendLog = field(default_factory=SendLog)
    busy_received: list[tuple[float, int]] = field(default_factory=list)
    group_received: list[tuple[float, int]] = field(default_factory=list)
    work_received: list[tuple[float, int]] = field(default_factory=list)
    receive_errors: list[str] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sending: bool = True

    async def start(self) -> None:
        """Join the group and start every loop; returns once each kind has arrived once."""
        member = await self.receiver.new_channel()
        await self.sender.group_add(self.room, member)
        self._tasks = [
            asyncio.create_task(self._send_loop(self._send_busy, self.busy_sent)),
            asyncio.create_task(self._send_loop(self._send_group, self.group_sent)),
            asyncio.create_task(self._send_loop(self._send_work, self.work_sent)),
            asyncio.create_task(self._receive_loop(self.busy, self.busy_received)),
            asyncio.create_task(self._receive_loop(member, self.group_received)),
            asyncio.create_task(self._team_loop()),
        ]
        await self.wait_all_arrive_after(time.monotonic())

    async def wait_all_arrive_after(self, moment: float, timeout_s: float = 15.0) -> float:
        """Wait until a message of each kind arrived after ``moment``; the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout_s
        while not all(
            any(at >= moment for at, _ in received)
            for received in (self.busy_received, self.group_received, self.work_received)
        ):
            if time.monotonic() > deadline:
                msg = (
                    f"traffic did not resume within {timeout_s} s: "
                    f"send errors {self.error_summary()}, receive errors {self.receive_errors[-3:]}"
                )
                raise AssertionError(msg)
            await asyncio.sleep(0.01)
        return time.monotonic() - started

    async def stop_sending(self) -> None:
        """Stop the send loops (receivers keep running)."""
        self._sending = False
        await asyncio.sleep(SEND_INTERVAL_S * 4)

    async def wait_team_received_everything(self, timeout_s: float = 15.0) -> set[int]:
        """Wait until every successfully sent team message arrived; return the missing ones."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = self.work_sent.numbers() - {n for _, n in self.work_received}
            if not missing or time.monotonic() > deadline:
                return missing
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        """Cancel every loop."""
        self._sending = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def error_summary(self) -> dict[str, int]:
        """How many send errors of each type were seen."""
        counts: dict[str, int] = {}
        for log in (self.busy_sent, self.group_sent, self.work_sent):
            for error in log.errors:
                kind = error.split(":", 1)[0]
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    # -- loops -----------------------------------------------------------------

    async def _send_busy(self, number: int) -> None:
        await self.sender.send(self.busy, {"type": "busy", "n": number})

    async def _send_group(self, number: int) -> None:
        await self.sender.group_send(self.room, {"type": "room", "n": number})

    async def _send_work(self, number: int) -> None:
        await self.sender.send(self.work, {"type": "work", "n": number})

    async def _send_loop(self, send: Callable[[int], Awaitable[None]], log: SendLog) -> None:
        number = 0
        while self._sending:
            started = time.monotonic()
            try:
                await send(number)
            except Exception as exc:  # noqa: BLE001 - recorded; the test judges the gap
                log.errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            log.ok.append((started, time.monotonic(), number))
            number += 1
            await asyncio.sleep(SEND_INTERVAL_S)

    async def _receive_loop(self, channel: str, received: list[tuple[float, int]]) -> None:
        while True:
            try:
                message = await self.receiver.receive(channel)
            except Exception as exc:  # noqa: BLE001 - recorded and retried
                self.receive_errors.append(f"{channel}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            received.append((time.monotonic(), int(message["n"])))

    async def _team_loop(self) -> None:
        while True:
            try:
                async with self.receiver.consume(
                    self.work, team="t", consumer="c1", claim_idle_ms=500
                ) as team:
                    async for delivery in team:
                        async with delivery:
                            self.work_received.append(
                                (time.monotonic(), int(delivery.message["n"]))
                            )
            except Exception as exc:  # noqa: BLE001 - recorded; the member rejoins
                self.receive_errors.append(f"team: {type(exc).__name__}: {exc}")
                await asyncio.sleep(RETRY_DELAY_S)
