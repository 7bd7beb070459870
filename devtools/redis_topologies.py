"""Redis Cluster, Sentinel, TLS and ACL topologies on loopback, for tests.

Each class here starts real ``redis-server`` processes (through
:class:`devtools.redis_servers.RedisServer` where a plain server will do) on
free ``127.0.0.1`` ports, waits until the topology is really usable, and
stops every process it started by pid. Nothing here touches a server it did
not start.

::

    with RedisCluster() as cluster:  # 3 masters + 3 replicas
        client = redis.asyncio.RedisCluster.from_url(cluster.redis_url)
        cluster.kill_master_of("asgi:chan:{statistic}")  # SIGKILL
        gap_s = cluster.wait_failover()

    with RedisSentinel() as sentinel:  # 1 master, 1 replica, 3 sentinels
        CONFIG = {"hosts": sentinel.hosts}  # channels_redis's sentinel form

    with RedisTlsServer() as tls:  # TLS only, client certificates required
        client = redis.Redis.from_url(tls.url, **tls.ssl_kwargs)

    with RedisAclServer() as acl:
        url = acl.add_user("layer", "secret", layer_acl_rules("asgi"))

Pitfall measured in this project: a cluster replica only replaces a killed
master if replication was fully up before the kill, so :class:`RedisCluster`
runs with ``--repl-diskless-sync-delay 0`` and is declared ready only when
every replica reports ``master_link_status:up``.
"""

from __future__ import annotations

import logging
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

from devtools.redis_servers import (
    LOOPBACK_HOST,
    RedisServer,
    RedisServerError,
    RedisServerStartError,
    StartStop,
    find_free_port,
    find_redis_server,
    ping,
)

__all__ = [
    "DEFAULT_MASTER_NAME",
    "LAYER_ACL_COMMANDS",
    "LAYER_ACL_MINIMAL_COMMANDS",
    "AsyncClient",
    "ClusterNode",
    "RedisAclServer",
    "RedisCluster",
    "RedisSentinel",
    "RedisTlsServer",
    "SentinelProcess",
    "TlsCertificates",
    "TopologyError",
    "async_client",
    "layer_acl_rules",
    "make_certificates",
    "sync_client",
]

logger = logging.getLogger(__name__)

CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000
# Cluster ports must leave room for the bus port below 65536.
CLUSTER_PORT_RANGE = (20000, 55535)
CLUSTER_PORT_ATTEMPTS = 200
DEFAULT_MASTERS = 3
DEFAULT_REPLICAS_PER_MASTER = 1
# Failure detection takes about node-timeout, the replica election adds
# 500-1000 ms; 1000 ms keeps a failover near 2 s on a busy 2-core machine.
DEFAULT_NODE_TIMEOUT_MS = 1000
DEFAULT_READY_TIMEOUT_S = 30.0
DEFAULT_FAILOVER_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05
CONTROL_TIMEOUT_S = 1.0
DEFAULT_STOP_TIMEOUT_S = 10.0
PROCESS_START_ATTEMPTS = 5

DEFAULT_MASTER_NAME = "mymaster"
DEFAULT_SENTINELS = 3
DEFAULT_QUORUM = 2
DEFAULT_DOWN_AFTER_MS = 1000
DEFAULT_SENTINEL_FAILOVER_TIMEOUT_MS = 5000

CERT_DAYS = "2"
RSA_BITS = "2048"

# Commands every server in a topology gets: nothing on disk, and replicas
# start syncing at once instead of waiting for more replicas to batch with.
REPLICATION_ARGS: tuple[str, ...] = ("--repl-diskless-sync-delay", "0")

# The short ACL command rule for the layer: everything but the dangerous
# commands (KEYS, FLUSHALL, CONFIG, DEBUG, SHUTDOWN, INFO, ...).
LAYER_ACL_COMMANDS: tuple[str, ...] = ("+@all", "-@dangerous")
# The explicit rule: only the commands the layer sends, directly or from its
# Lua scripts (read from streams_layer/*.py and scripts/*.lua, checked by
# running every operation under it), plus the connection commands redis-py
# sends (HELLO, PING; redis-py ignores a refused CLIENT SETINFO, which 7.0 lacks).
LAYER_ACL_MINIMAL_COMMANDS: tuple[str, ...] = (
    "-@all",
    *(
        f"+{command}"
        for command in (
            "hello", "ping", "time",
            "exists", "type", "ttl", "pttl", "expire", "unlink", "scan",
            "eval", "evalsha", "script|load",
            "get", "set", "hmget", "hset", "hdel", "hincrby", "hlen",
            "zadd", "zrange", "zrem", "zremrangebyscore", "zcard",
            "xadd", "xack", "xautoclaim", "xdel", "xlen", "xpending", "xrange",
            "xrevrange", "xread", "xreadgroup", "xtrim",
            "xgroup|create", "xgroup|delconsumer", "xinfo|consumers", "xinfo|groups",
        )
    ),
)  # fmt: skip

Predicate = Callable[[], bool]
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


class TopologyError(RedisServerError):
    """A topology did not start, did not become ready, or did not fail over in time."""


def _wait_until(predicate: Predicate, *, timeout_s: float, what: str) -> float:
    """Poll ``predicate`` until it returns true; return the seconds waited.

    Raises:
        TopologyError: ``timeout_s`` passed first; the message names ``what``.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout_s} s waiting for {what}"
            raise TopologyError(msg)
        time.sleep(POLL_INTERVAL_S)
    return time.monotonic() - started


def async_client(url: str, **kwargs: Any) -> AsyncClient:
    """A redis-py asyncio client for ``url``, for asserting through Redis in tests.

    ``redis+cluster://`` and ``rediss+cluster://`` (the layer's cluster
    ``hosts`` form) give a ``redis.asyncio.RedisCluster``, anything else a
    ``redis.asyncio.Redis``.
    """
    if url.startswith(CLUSTER_SCHEMES):
        return redis.asyncio.cluster.RedisCluster.from_url(url.replace("+cluster", "", 1), **kwargs)
    return redis.asyncio.Redis.from_url(url, **kwargs)


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """The synchronous twin of :func:`async_client` (a ``redis.RedisCluster`` for cluster URLs).

    Typed as ``redis.Redis``: the cluster client has every command the tests use.
    """
    if url.startswith(CLUSTER_SCHEMES):
        cluster = redis.cluster.RedisCluster.from_url(url.replace("+cluster", "", 1), **kwargs)
        return cast("redis.Redis", cluster)
    return redis.Redis.from_url(url, **kwargs)


def _control_client(port: int, **kwargs: Any) -> redis.Redis:
    """A short-timeout synchronous client for control commands to one process."""
    return redis.Redis(
        host=LOOPBACK_HOST,
        port=port,
        socket_timeout=CONTROL_TIMEOUT_S,
        socket_connect_timeout=CONTROL_TIMEOUT_S,
        decode_responses=True,
        **kwargs,
    )


def _query(port: int, *args: str, **kwargs: Any) -> Any:
    """Run one command on ``127.0.0.1:port``; ``None`` when the process does not answer."""
    client = _control_client(port, **kwargs)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    except (redis.exceptions.RedisError, OSError):
        return None
    finally:
        client.close()


def _info_fields(text: object) -> dict[str, str]:
    """Parse the ``key:value`` lines of an ``INFO``/``CLUSTER INFO`` reply."""
    if isinstance(text, dict):
        return {str(key): str(value) for key, value in text.items()}
    if not isinstance(text, str):
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _replication_up(port: int, **kwargs: Any) -> bool:
    """Whether the replica on ``port`` reports ``master_link_status:up``."""
    info = _info_fields(_query(port, "INFO", "replication", **kwargs))
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def _replica_ports(info: dict[str, Any]) -> list[int] | None:
    """The ports of the online replicas listed in a master's ``INFO replication``."""
    ports = []
    for key, value in info.items():
        if not (key.startswith("slave") and key[len("slave") :].isdigit()):
            continue
        # redis-py parses "ip=...,port=...,state=online" into a dict already.
        fields = (
            value
            if isinstance(value, dict)
            else dict(item.partition("=")[::2] for item in str(value).split(","))
        )
        if fields.get("state") != "online":
            return None
        ports.append(int(fields["port"]))
    return ports


def _wait_caught_up(master_port: int, *, timeout_s: float) -> float:
    """Wait until every replica of ``master_port`` has applied every write made so far.

    The target is the master's ``master_repl_offset`` now; a replica has
    caught up when its own ``slave_repl_offset`` reaches it.
    """
    info = _query(master_port, "INFO", "replication")
    if not isinstance(info, dict) or info.get("role") != "master":
        msg = f"no master answers on port {master_port}"
        raise TopologyError(msg)
    target = int(info["master_repl_offset"])
    ports = _replica_ports(info)
    if not ports:
        msg = f"the master on port {master_port} has no online replica: {info}"
        raise TopologyError(msg)

    def caught_up() -> bool:
        for port in ports:
            replica = _query(port, "INFO", "replication")
            if not isinstance(replica, dict) or int(replica.get("slave_repl_offset", -1)) < target:
                return False
        return True

    return _wait_until(caught_up, timeout_s=timeout_s, what=f"the replicas of {master_port}")


# -- processes that RedisServer cannot run -------------------------------------


class _OwnedProcess(StartStop):
    """A ``redis-server`` started from a config file, for modes RedisServer does not cover.

    Sentinels need a writable config file (they rewrite it), and a TLS-only
    server (``port 0``) cannot be checked with a plain ``PING``; both are
    started here from a config file in a temporary directory of their own,
    and stopped by pid.
    """

    def __init__(self, *, name: str, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> None:
        self.host = LOOPBACK_HOST
        self._name = name
        self._ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self._port} pid={self.pid}>"

    @property
    def port(self) -> int:
        """The TCP port; known once the process has been started."""
        if self._port is None:
            msg = f"{self._name} has not been started yet"
            raise TopologyError(msg)
        return self._port

    @property
    def pid(self) -> int | None:
        """The pid of the running process, or ``None``."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def directory(self) -> Path:
        """The process's own temporary directory (config and log)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"{self._name}-"))
        return self._dir

    def is_running(self) -> bool:
        """Whether the process started here is alive."""
        return self.pid is not None

    def start(self) -> Self:
        """Start the process on a free port and wait until it is ready.

        Raises:
            TopologyError: it exited or was not ready in time; the message
                carries the tail of its log.
        """
        if self.is_running():
            return self
        binary = find_redis_server()
        error: TopologyError | None = None
        for _ in range(PROCESS_START_ATTEMPTS):
            port = find_free_port(self.host) if self._port is None else self._port
            try:
                self._launch(binary, port)
            except TopologyError as exc:
                error = exc
                self._port = None
                continue
            return self
        if error is None:  # pragma: no cover - the loop runs at least once
            error = TopologyError(f"{self._name} did not start")
        raise error

    def stop(self, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGTERM the process (SIGKILL after ``timeout_s``) and remove its directory."""
        self._terminate(timeout_s=timeout_s)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the process, as a crash would."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the process's log."""
        if self._dir is None:
            return ""
        try:
            text = (self._dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- for subclasses --------------------------------------------------------

    def _config_lines(self, port: int) -> list[str]:
        """The config file's lines for a process listening on ``port``."""
        raise NotImplementedError

    def _extra_argv(self) -> list[str]:
        """Arguments after the config file path."""
        return []

    def _is_ready(self) -> bool:
        """Whether the process answers as it should."""
        raise NotImplementedError

    # -- internals -------------------------------------------------------------

    def _launch(self, binary: str, port: int) -> None:
        directory = self.directory
        logfile = directory / "redis.log"
        logfile.write_bytes(b"")
        common = [
            f"bind {self.host}",
            "daemonize no",
            f'dir "{directory}"',
            f'logfile "{logfile}"',
        ]
        config = directory / "redis.conf"
        config.write_text("\n".join([*common, *self._config_lines(port)]) + "\n")
        argv = [binary, str(config), *self._extra_argv()]
        with (directory / "output.log").open("wb") as output:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        self._port = port
        deadline = time.monotonic() + self._ready_timeout_s
        while not self._is_ready():
            if self._process.poll() is not None or time.monotonic() >= deadline:
                self.kill()
                msg = f"{self._name} on port {port} did not start:\n{self.log_tail()}"
                raise TopologyError(msg)
            time.sleep(POLL_INTERVAL_S)
        logger.debug("started %r", self)

    def _terminate(self, *, timeout_s: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s pid %d ignored SIGTERM; killing it", self._name, process.pid)
            process.kill()
            process.wait()


# -- Redis Cluster -------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``: a node as the cluster sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        """Whether the node is a master that the cluster does not consider failed."""
        return "master" in self.flags and not self.flags & {"fail", "fail?", "handshake", "noaddr"}

    def owns(self, slot: int) -> bool:
        """Whether ``slot`` is in one of the node's slot ranges."""
        return any(first <= slot <= last for first, last in self.slots)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK_HOST, port))
        except OSError:
            return False
    return True


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too.

    redis-server refuses cluster mode on ports above 55535, so the ports
    that binding to port 0 hands out (often above that) will not do.
    """
    rng = random.SystemRandom()
    for _ in range(CLUSTER_PORT_ATTEMPTS):
        port = rng.randint(*CLUSTER_PORT_RANGE)
        if _port_is_free(port) and _port_is_free(port + CLUSTER_BUS_OFFSET):
            return port
    msg = f"no free port pair (port, port + {CLUSTER_BUS_OFFSET}) found in {CLUSTER_PORT_RANGE}"
    raise TopologyError(msg)


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """Parse a ``CLUSTER NODES`` reply (slot migration markers are ignored)."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:  # noqa: PLR2004 - id addr flags master ping pong epoch link
            continue
        address = fields[1].split("@", 1)[0].split(",", 1)[0]
        slots = []
        for item in fields[8:]:
            if item.startswith("["):
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            ClusterNode(
                node_id=fields[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(slots),
            )
        )
    return nodes


class RedisCluster(StartStop):
    """A Redis Cluster of ``masters`` shards with ``replicas_per_master`` replicas each.

    Every node is a :class:`RedisServer` with ``--cluster-enabled yes``, a
    short ``--cluster-node-timeout`` (fast failover) and
    ``--repl-diskless-sync-delay 0``. The cluster is created with
    ``redis-cli --cluster create`` and :meth:`start` returns only once
    ``CLUSTER INFO`` says ``cluster_state:ok`` on every node and every
    replica reports ``master_link_status:up``.

    Args:
        masters: number of shards (at least 3, as ``redis-cli`` requires).
        replicas_per_master: replicas of each master.
        node_timeout_ms: ``cluster-node-timeout``.
        extra_args: more ``redis-server`` arguments for every node.
        ready_timeout_s: how long :meth:`start` waits for the cluster.
    """

    def __init__(
        self,
        *,
        masters: int = DEFAULT_MASTERS,
        replicas_per_master: int = DEFAULT_REPLICAS_PER_MASTER,
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
        extra_args: Sequence[str] = (),
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ) -> None:
        if masters < DEFAULT_MASTERS:
            msg = f"a cluster needs at least {DEFAULT_MASTERS} masters, got {masters!r}"
            raise ValueError(msg)
        if replicas_per_master < 0:
            msg = f"replicas_per_master must be >= 0, got {replicas_per_master!r}"
            raise ValueError(msg)
        self._masters = masters
        self._replicas_per_master = replicas_per_master
        self._node_timeout_ms = node_timeout_ms
        self._ready_timeout_s = ready_timeout_s
        node_args = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
            # Replicas of a master killed right after a write must still
            # stand for election, however stale they think they are.
            "--cluster-replica-validity-factor",
            "0",
            *REPLICATION_ARGS,
            *extra_args,
        )
        self._node_args = node_args
        self._node_count = masters * (1 + replicas_per_master)
        self.nodes: list[RedisServer] = []
        self._killed: list[RedisServer] = []
        self._killed_slot: int | None = None
        self._killed_id: str | None = None
        self._killed_at: float | None = None

    def __repr__(self) -> str:
        ports = ",".join(str(node.port) for node in self.nodes if node.is_running())
        return f"<RedisCluster {LOOPBACK_HOST}:[{ports}]>"

    # -- addresses -------------------------------------------------------------

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node that is running."""
        return [(node.host, node.port) for node in self.nodes if node.is_running()]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:PORT`` of the first running node (the layer's hosts form)."""
        host, port = self.startup_nodes[0]
        return f"redis+cluster://{host}:{port}"

    @property
    def redis_url(self) -> str:
        """``redis://127.0.0.1:PORT`` of the first running node, for ``RedisCluster.from_url``."""
        host, port = self.startup_nodes[0]
        return f"redis://{host}:{port}"

    # -- life cycle ------------------------------------------------------------

    def start(self) -> Self:
        """Start every node, create the cluster and wait until it is ready.

        Raises:
            RedisServerNotFoundError: no ``redis-server`` binary.
            TopologyError: ``redis-cli`` is missing, cluster creation failed
                or the cluster was not ready within ``ready_timeout_s``.
        """
        started = time.monotonic()
        try:
            while len(self.nodes) < self._node_count:
                self.nodes.append(self._start_node())
            self._create()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("cluster %r ready in %.2f s", self, time.monotonic() - started)
        return self

    def stop(self) -> None:
        """Stop every node (by pid) and remove their directories."""
        for node in self.nodes:
            node.stop()

    def wait_ready(self, *, timeout_s: float | None = None) -> float:
        """Wait until every running node is ``cluster_state:ok`` and every replica is linked.

        Returns the seconds waited.

        Raises:
            TopologyError: not ready within ``timeout_s`` (default: the
                constructor's ``ready_timeout_s``).
        """
        limit_s = self._ready_timeout_s if timeout_s is None else timeout_s
        return _wait_until(self._is_ready, timeout_s=limit_s, what=f"{self!r} to be ready")

    # -- topology --------------------------------------------------------------

    def cluster_nodes(self) -> list[ClusterNode]:
        """The cluster as the first answering node sees it.

        Raises:
            TopologyError: no node answers.
        """
        for node in self.nodes:
            if not node.is_running():
                continue
            text = _query(node.port, "CLUSTER", "NODES")
            if isinstance(text, str):
                return parse_cluster_nodes(text)
        msg = f"no node of {self!r} answers CLUSTER NODES"
        raise TopologyError(msg)

    def keyslot(self, key: str) -> int:
        """The hash slot of ``key``, as the cluster computes it (``CLUSTER KEYSLOT``)."""
        for node in self.nodes:
            if node.is_running():
                slot = _query(node.port, "CLUSTER", "KEYSLOT", key)
                if isinstance(slot, int):
                    return slot
        msg = f"no node of {self!r} answers CLUSTER KEYSLOT"
        raise TopologyError(msg)

    def master_of(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot right now.

        Raises:
            TopologyError: no live master owns the slot (a failover is under way).
        """
        slot = self.keyslot(key)
        owner = self._owner_of(slot)
        if owner is None:
            msg = f"no live master owns slot {slot} (key {key!r})"
            raise TopologyError(msg)
        return self._server_on(owner.port)

    def masters(self) -> list[RedisServer]:
        """The nodes that are live masters now."""
        return [self._server_on(node.port) for node in self.cluster_nodes() if node.is_master]

    def kill_master_of(self, key: str) -> RedisServer:
        """SIGKILL the master that serves ``key``; return the killed node.

        :meth:`wait_failover` then waits until a replica has taken over its
        slots; :meth:`restore` brings the killed node back as a replica.
        """
        slot = self.keyslot(key)
        owner = self._owner_of(slot)
        if owner is None:
            msg = f"no live master owns slot {slot} (key {key!r})"
            raise TopologyError(msg)
        server = self._server_on(owner.port)
        server.kill()
        self._killed.append(server)
        self._killed_slot = slot
        self._killed_id = owner.node_id
        self._killed_at = time.monotonic()
        logger.info(
            "killed master %s on port %d (slot %d of %r)", owner.node_id, owner.port, slot, key
        )
        return server

    def wait_failover(self, *, timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S) -> float:
        """Wait until another master serves the killed master's slots and the cluster is ok.

        Returns the seconds from the kill to the moment the topology showed
        the new master (a bound on, not a measure of, the client-side gap).

        Raises:
            TopologyError: nothing was killed, or no failover within ``timeout_s``.
        """
        if self._killed_slot is None or self._killed_at is None:
            msg = "wait_failover() called before kill_master_of()"
            raise TopologyError(msg)
        slot, killed_id, killed_at = self._killed_slot, self._killed_id, self._killed_at

        def replaced() -> bool:
            try:
                owner = self._owner_of(slot)
            except TopologyError:
                return False
            return owner is not None and owner.node_id != killed_id and self._states_ok()

        _wait_until(replaced, timeout_s=timeout_s, what=f"a new master for slot {slot}")
        elapsed = time.monotonic() - killed_at
        logger.info("failover of slot %d took %.2f s", slot, elapsed)
        return elapsed

    def wait_replicated(self, *, timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S) -> float:
        """Wait until every replica has acknowledged every write its master took.

        Replication is asynchronous: a master killed right after a write may
        take that write with it. Tests that must not lose data before a kill
        call this first. Returns the seconds waited.
        """

        started = time.monotonic()
        for node in self.cluster_nodes():
            if node.is_master and node.slots:
                _wait_caught_up(node.port, timeout_s=timeout_s)
        return time.monotonic() - started

    def restore(self, *, timeout_s: float | None = None) -> None:
        """Start the killed nodes again (they rejoin as replicas) and wait until ready."""
        for server in self._killed:
            server.start()
        self._killed.clear()
        self._killed_slot = self._killed_id = self._killed_at = None
        self.wait_ready(timeout_s=timeout_s)

    # -- internals -------------------------------------------------------------

    def _start_node(self) -> RedisServer:
        error: RedisServerError | None = None
        for _ in range(PROCESS_START_ATTEMPTS):
            node = RedisServer(port=_free_cluster_port(), extra_args=self._node_args)
            try:
                return node.start()
            except RedisServerStartError as exc:
                # Lost the port to another process between choosing and binding.
                node.stop()
                error = exc
        if error is None:  # pragma: no cover - the loop runs at least once
            error = TopologyError("no cluster node started")
        raise error

    def _create(self) -> None:
        cli = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
        if not Path(cli).is_file():
            msg = "redis-cli is needed to create a cluster (it comes with redis-server)"
            raise TopologyError(msg)
        argv = [
            cli,
            "--cluster",
            "create",
            *(f"{node.host}:{node.port}" for node in self.nodes),
            "--cluster-replicas",
            str(self._replicas_per_master),
            "--cluster-yes",
        ]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=self._ready_timeout_s,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            msg = f"redis-cli --cluster create failed ({result.returncode}):\n{output}"
            raise TopologyError(msg)

    def _server_on(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        msg = f"port {port} is not a node of {self!r}"
        raise TopologyError(msg)

    def _owner_of(self, slot: int) -> ClusterNode | None:
        for node in self.cluster_nodes():
            if node.is_master and node.owns(slot):
                return node
        return None

    def _states_ok(self) -> bool:
        running = [node for node in self.nodes if node.is_running()]
        return all(
            _info_fields(_query(node.port, "CLUSTER", "INFO")).get("cluster_state") == "ok"
            for node in running
        )

    def _is_ready(self) -> bool:
        if not self._states_ok():
            return False
        try:
            view = self.cluster_nodes()
        except TopologyError:
            return False
        running = {node.port for node in self.nodes if node.is_running()}
        live = [node for node in view if node.port in running]
        if len(live) != len(running) or any("fail" in n.flags or "fail?" in n.flags for n in live):
            return False
        covered = sum(
            last - first + 1 for node in live if node.is_master for first, last in node.slots
        )
        if covered != CLUSTER_SLOTS:
            return False
        # Every running node that serves no slots must be a linked replica
        # (a restarted master first comes back as an empty master).
        replicas = [node for node in live if "slave" in node.flags]
        shard_masters = [node for node in live if node.is_master and node.slots]
        if len(replicas) + len(shard_masters) != len(live):
            return False
        return all(_replication_up(node.port) for node in replicas)


# -- Redis Sentinel ------------------------------------------------------------


class SentinelProcess(_OwnedProcess):
    """One ``redis-server --sentinel`` watching ``master_name``."""

    def __init__(
        self,
        *,
        master_port: int,
        master_name: str = DEFAULT_MASTER_NAME,
        quorum: int = DEFAULT_QUORUM,
        down_after_ms: int = DEFAULT_DOWN_AFTER_MS,
        failover_timeout_ms: int = DEFAULT_SENTINEL_FAILOVER_TIMEOUT_MS,
    ) -> None:
        super().__init__(name="redis-sentinel")
        self.master_name = master_name
        self._master_port = master_port
        self._quorum = quorum
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms

    def _config_lines(self, port: int) -> list[str]:
        name = self.master_name
        return [
            f"port {port}",
            f"sentinel monitor {name} {self.host} {self._master_port} {self._quorum}",
            f"sentinel down-after-milliseconds {name} {self._down_after_ms}",
            f"sentinel failover-timeout {name} {self._failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]

    def _extra_argv(self) -> list[str]:
        return ["--sentinel"]

    def _is_ready(self) -> bool:
        return self._port is not None and ping(self.host, self._port)

    def query(self, *args: str) -> Any:
        """Run one command on this sentinel; ``None`` when it does not answer."""
        return _query(self.port, *args)


class RedisSentinel(StartStop):
    """One master, ``replicas`` replicas and ``sentinels`` sentinels on loopback.

    :meth:`start` returns once the replicas are linked and every sentinel
    knows the replicas and all the other sentinels, so a failover can
    happen at once.

    Args:
        master_name: the name the sentinels monitor.
        replicas: replicas of the master.
        sentinels: sentinel processes.
        quorum: sentinels that must agree the master is down.
        down_after_ms: ``down-after-milliseconds``.
        failover_timeout_ms: ``failover-timeout``.
    """

    def __init__(  # noqa: PLR0913 - keyword-only topology knobs
        self,
        *,
        master_name: str = DEFAULT_MASTER_NAME,
        replicas: int = 1,
        sentinels: int = DEFAULT_SENTINELS,
        quorum: int = DEFAULT_QUORUM,
        down_after_ms: int = DEFAULT_DOWN_AFTER_MS,
        failover_timeout_ms: int = DEFAULT_SENTINEL_FAILOVER_TIMEOUT_MS,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ) -> None:
        if replicas < 1:
            msg = f"a failover needs at least one replica, got {replicas!r}"
            raise ValueError(msg)
        if not 0 < quorum <= sentinels:
            msg = f"quorum must be in 1..{sentinels}, got {quorum!r}"
            raise ValueError(msg)
        self.master_name = master_name
        self._replica_count = replicas
        self._sentinel_count = sentinels
        self._quorum = quorum
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        self._ready_timeout_s = ready_timeout_s
        self.servers: list[RedisServer] = []
        self.sentinels: list[SentinelProcess] = []
        self._killed_port: int | None = None
        self._killed_at: float | None = None

    def __repr__(self) -> str:
        ports = ",".join(str(s.port) for s in self.sentinels if s.is_running())
        return f"<RedisSentinel {self.master_name} sentinels={LOOPBACK_HOST}:[{ports}]>"

    # -- addresses -------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every running sentinel."""
        return [(s.host, s.port) for s in self.sentinels if s.is_running()]

    @property
    def hosts(self) -> list[dict[str, Any]]:
        """channels_redis's sentinel ``hosts`` form for this topology.

        ``channels_redis.utils.create_pool`` pops ``sentinels``,
        ``master_name`` and ``sentinel_kwargs`` and passes the rest of the
        dict to ``SentinelConnectionPool``.
        """
        return [
            {
                "sentinels": self.sentinel_addresses,
                "master_name": self.master_name,
                "sentinel_kwargs": {"socket_timeout": CONTROL_TIMEOUT_S},
            }
        ]

    @property
    def url(self) -> str:
        """The same topology as one ``redis+sentinel://`` URL (see ``docs/deployment.md``)."""
        members = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return (
            f"redis+sentinel://{members}/{self.master_name}/0"
            f"?sentinel_socket_timeout={CONTROL_TIMEOUT_S}"
        )

    def master_address(self) -> tuple[str, int] | None:
        """The master's address according to a majority of the sentinels, or ``None``."""
        votes: dict[tuple[str, int], int] = {}
        for sentinel in self.sentinels:
            if not sentinel.is_running():
                continue
            reply = sentinel.query("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            if isinstance(reply, list) and len(reply) == 2:  # noqa: PLR2004 - host, port
                address = (str(reply[0]), int(reply[1]))
                votes[address] = votes.get(address, 0) + 1
        for address, count in votes.items():
            if count >= self._quorum:
                return address
        return None

    def master(self) -> RedisServer:
        """The server that is master now.

        Raises:
            TopologyError: the sentinels do not agree on a master.
        """
        address = self.master_address()
        if address is None:
            msg = f"the sentinels of {self!r} agree on no master"
            raise TopologyError(msg)
        return self._server_on(address[1])

    # -- life cycle ------------------------------------------------------------

    def start(self) -> Self:
        """Start the master, its replicas and the sentinels; wait until all know each other.

        Raises:
            TopologyError: something did not start or was not ready in time.
        """
        started = time.monotonic()
        try:
            master = RedisServer(extra_args=REPLICATION_ARGS).start()
            self.servers.append(master)
            for _ in range(self._replica_count):
                replica_args = (*REPLICATION_ARGS, "--replicaof", master.host, str(master.port))
                self.servers.append(RedisServer(extra_args=replica_args).start())
            self._wait(self._replicas_linked, what="the replicas to link to the master")
            for _ in range(self._sentinel_count):
                sentinel = SentinelProcess(
                    master_port=master.port,
                    master_name=self.master_name,
                    quorum=self._quorum,
                    down_after_ms=self._down_after_ms,
                    failover_timeout_ms=self._failover_timeout_ms,
                )
                self.sentinels.append(sentinel.start())
            self._wait(self._sentinels_ready, what="the sentinels to discover the topology")
        except BaseException:
            self.stop()
            raise
        logger.info("sentinel topology %r ready in %.2f s", self, time.monotonic() - started)
        return self

    def stop(self) -> None:
        """Stop every sentinel and server (by pid)."""
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()

    def wait_replicated(self, *, timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S) -> float:
        """Wait until the replicas have acknowledged every write the master took.

        Returns the seconds waited.
        """
        return _wait_caught_up(self.master().port, timeout_s=timeout_s)

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; return it."""
        master = self.master()
        master.kill()
        self._killed_port = master.port
        self._killed_at = time.monotonic()
        logger.info("killed sentinel master on port %d", master.port)
        return master

    def wait_failover(self, *, timeout_s: float = DEFAULT_FAILOVER_TIMEOUT_S) -> float:
        """Wait until the sentinels name a new master and it accepts writes.

        Returns the seconds since :meth:`kill_master`.

        Raises:
            TopologyError: nothing was killed, or no failover within ``timeout_s``.
        """
        if self._killed_port is None or self._killed_at is None:
            msg = "wait_failover() called before kill_master()"
            raise TopologyError(msg)
        killed_port, killed_at = self._killed_port, self._killed_at

        def promoted() -> bool:
            address = self.master_address()
            if address is None or address[1] == killed_port:
                return False
            role = _info_fields(_query(address[1], "INFO", "replication")).get("role")
            return role == "master"

        _wait_until(promoted, timeout_s=timeout_s, what="the sentinels to promote a replica")
        elapsed = time.monotonic() - killed_at
        logger.info("sentinel failover took %.2f s", elapsed)
        return elapsed

    # -- internals -------------------------------------------------------------

    def _wait(self, predicate: Predicate, *, what: str) -> None:
        _wait_until(predicate, timeout_s=self._ready_timeout_s, what=what)

    def _server_on(self, port: int) -> RedisServer:
        for server in self.servers:
            if server.port == port:
                return server
        msg = f"port {port} is not a server of {self!r}"
        raise TopologyError(msg)

    def _replicas_linked(self) -> bool:
        return all(_replication_up(server.port) for server in self.servers[1:])

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            replicas = sentinel.query("SENTINEL", "REPLICAS", self.master_name)
            others = sentinel.query("SENTINEL", "SENTINELS", self.master_name)
            if not isinstance(replicas, list) or not isinstance(others, list):
                return False
            if len(others) != self._sentinel_count - 1 or len(replicas) != self._replica_count:
                return False
            for replica in replicas:
                fields = _pairs(replica)
                if fields.get("flags") != "slave" or fields.get("master-link-status") != "ok":
                    return False
        return True


def _pairs(reply: object) -> dict[str, str]:
    """A flat ``[key, value, ...]`` (or dict) reply as a dict of strings."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    if isinstance(reply, list):
        return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}
    return {}


# -- TLS -----------------------------------------------------------------------


@dataclass(frozen=True)
class TlsCertificates:
    """Paths of a throwaway CA and the server and client certificates it signed."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        msg = "openssl is needed to make TLS certificates (`apt-get install openssl`)"
        raise TopologyError(msg)
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"openssl {args[0]} failed: {result.stderr.strip()}"
        raise TopologyError(msg)


def make_certificates(directory: Path) -> TlsCertificates:
    """Make a CA, a server certificate for ``127.0.0.1`` and a client certificate in ``directory``.

    Raises:
        TopologyError: ``openssl`` is missing or failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", RSA_BITS, cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", CERT_DAYS,
        "-subj", "/CN=streams-layer test CA", "-out", "ca.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory,
    )  # fmt: skip
    # Python 3.13 verifies with VERIFY_X509_STRICT: leaf certificates need an
    # authority key identifier and the usual key usages.
    leaf = (
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    (directory / "server.ext").write_text(
        leaf + "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (directory / "client.ext").write_text(leaf + "extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("genrsa", "-out", f"{name}.key", RSA_BITS, cwd=directory)
        _openssl(
            "req", "-new", "-key", f"{name}.key", "-subj", f"/CN=streams-layer test {name}",
            "-out", f"{name}.csr", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", CERT_DAYS, "-sha256", "-extfile", f"{name}.ext",
            "-out", f"{name}.crt", cwd=directory,
        )  # fmt: skip
    return TlsCertificates(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


class RedisTlsServer(_OwnedProcess):
    """A ``redis-server`` that speaks TLS only (``port 0``) and requires client certificates.

    The certificates come from :func:`make_certificates` in the server's own
    directory. Clients connect with :attr:`url` and :attr:`ssl_kwargs`, or
    with :attr:`url_with_certificates` alone.
    """

    def __init__(self, *, extra_config: Sequence[str] = ()) -> None:
        super().__init__(name="redis-tls")
        self._extra_config = tuple(extra_config)
        self._certificates: TlsCertificates | None = None

    @property
    def certificates(self) -> TlsCertificates:
        """The CA, server and client certificates (made on first use)."""
        if self._certificates is None:
            self._certificates = make_certificates(self.directory / "tls")
        return self._certificates

    @property
    def url(self) -> str:
        """``rediss://127.0.0.1:PORT/0``."""
        return f"rediss://{self.host}:{self.port}/0"

    @property
    def ssl_kwargs(self) -> dict[str, Any]:
        """redis-py connection arguments: the CA and the client certificate and key."""
        certs = self.certificates
        return {
            "ssl_ca_certs": str(certs.ca_cert),
            "ssl_certfile": str(certs.client_cert),
            "ssl_keyfile": str(certs.client_key),
        }

    @property
    def url_with_certificates(self) -> str:
        """:attr:`url` with the certificate paths as query parameters (redis-py passes them on)."""
        query = "&".join(f"{key}={value}" for key, value in self.ssl_kwargs.items())
        return f"{self.url}?{query}"

    def _config_lines(self, port: int) -> list[str]:
        certs = self.certificates
        return [
            "port 0",
            f"tls-port {port}",
            f'tls-cert-file "{certs.server_cert}"',
            f'tls-key-file "{certs.server_key}"',
            f'tls-ca-cert-file "{certs.ca_cert}"',
            "tls-auth-clients yes",
            'save ""',
            "appendonly no",
            *self._extra_config,
        ]

    def _is_ready(self) -> bool:
        if self._port is None:
            return False
        certs = self.certificates
        context = ssl.create_default_context(cafile=str(certs.ca_cert))
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        try:
            with (
                socket.create_connection((self.host, self._port), timeout=CONTROL_TIMEOUT_S) as raw,
                context.wrap_socket(raw, server_hostname=self.host) as sock,
            ):
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


# -- ACL -----------------------------------------------------------------------


def layer_acl_rules(prefix: str, *, minimal: bool = False) -> list[str]:
    """The ``ACL SETUSER`` rules that let a user run the layer under ``prefix`` and nothing else.

    Keys are limited to ``<prefix>:*`` (every key the layer makes starts so),
    Pub/Sub channels to none, commands to :data:`LAYER_ACL_COMMANDS`, or to
    :data:`LAYER_ACL_MINIMAL_COMMANDS` when ``minimal``.
    """
    commands = LAYER_ACL_MINIMAL_COMMANDS if minimal else LAYER_ACL_COMMANDS
    return [f"~{prefix}:*", "resetchannels", *commands]


class RedisAclServer(StartStop):
    """A :class:`RedisServer` whose default user needs a password, for ACL users of tests.

    The default user (password :attr:`admin_password`) keeps full access, for
    fixtures and assertions; :meth:`add_user` creates restricted users.
    """

    admin_password = "topology-admin"  # noqa: S105 - a throwaway loopback server

    def __init__(self) -> None:
        self.server = RedisServer(extra_args=("--requirepass", self.admin_password))

    @property
    def port(self) -> int:
        """The server's port."""
        return self.server.port

    @property
    def admin_url(self) -> str:
        """URL of the unrestricted default user."""
        return f"redis://:{self.admin_password}@{self.server.host}:{self.port}/0"

    def url_for(self, username: str, password: str) -> str:
        """``redis://username:password@127.0.0.1:PORT/0``."""
        return f"redis://{username}:{password}@{self.server.host}:{self.port}/0"

    def add_user(self, username: str, password: str, rules: Sequence[str]) -> str:
        """Create (or reset) ACL user ``username`` with ``rules``; return its URL.

        Raises:
            TopologyError: the server refused the rules.
        """
        client = _control_client(self.port, password=self.admin_password)
        try:
            client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "SETUSER", username, "reset", "on", f">{password}", *rules
            )
        except redis.exceptions.ResponseError as exc:
            msg = f"ACL SETUSER {username} {' '.join(rules)} refused: {exc}"
            raise TopologyError(msg) from exc
        finally:
            client.close()
        return self.url_for(username, password)

    def acl_log(self) -> list[dict[str, Any]]:
        """``ACL LOG`` entries (denied commands and keys), newest first."""
        client = _control_client(self.port, password=self.admin_password)
        try:
            entries = client.acl_log()
        finally:
            client.close()
        return [dict(entry) for entry in entries]

    def start(self) -> Self:
        """Start the server.

        Raises:
            RedisServerStartError: it did not start.
        """
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop the server by pid."""
        self.server.stop()
