"""StatisticsMiddleware: one message per request, and never a slow or failed response."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.test import AsyncClient, Client
from pytest_django.fixtures import Settings as SettingsWrapper

from devtools.redis_servers import RedisServer
from tests.layer_helpers import sample_channel_layers
from worker.middleware import get_sender
from worker.sender import FailureLog, StatisticSender

RESPONSE_BOUND_S = 0.5
RECEIVE_TIMEOUT_S = 5.0


@pytest.fixture
async def stats_layer(
    settings: SettingsWrapper, redis_url: str, prefix: str
) -> AsyncIterator[None]:
    settings.CHANNEL_LAYERS = sample_channel_layers(redis_url, prefix)
    yield
    layer = get_channel_layer()
    if layer is not None:
        await layer.close()


async def receive_statistic() -> dict[str, Any]:
    layer = get_channel_layer()
    assert layer is not None
    message = await asyncio.wait_for(layer.receive("statistic"), RECEIVE_TIMEOUT_S)
    assert isinstance(message, dict)
    return message


def sender_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "worker.sender" and record.levelno == logging.WARNING
    ]


# -- the failure log ---------------------------------------------------------------


def test_failure_log_reports_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = FailureLog(logging.getLogger("worker.sender"), interval_s=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="worker.sender"):
        for _ in range(100):
            log.record("down")
        now[0] += 29.0
        log.record("down")
        assert len(sender_warnings(caplog)) == 1
        now[0] += 2.0
        log.record("still down")
    warnings = sender_warnings(caplog)
    assert len(warnings) == 2
    assert warnings[0].getMessage().startswith("request statistics not sent: 1 failure(s)")
    assert "101 failure(s)" in warnings[1].getMessage()
    assert "still down" in warnings[1].getMessage()


# -- one message per request ---------------------------------------------------------


@pytest.mark.usefixtures("stats_layer")
async def test_async_request_sends_one_statistic_message() -> None:
    before = time.time()
    response = await AsyncClient().get("/lobby/", headers={"user-agent": "async-agent/1.0"})
    assert response.status_code == 200
    await get_sender().drain()
    message = await receive_statistic()
    assert message["user_agent"] == "async-agent/1.0"
    assert message["client_ip"] == "127.0.0.1"
    assert message["method"] == "GET"
    assert message["path"] == "/lobby/"
    assert message["status"] == 200
    assert before <= message["timestamp"] <= time.time()
    layer = get_channel_layer()
    assert layer is not None
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive("statistic"), 0.3)


@pytest.mark.usefixtures("stats_layer")
async def test_not_found_is_reported_with_its_status() -> None:
    response = await AsyncClient().post("/no such room/", headers={"user-agent": "x"})
    assert response.status_code == 404
    await get_sender().drain()
    message = await receive_statistic()
    assert (message["method"], message["path"], message["status"]) == (
        "POST",
        "/no such room/",
        404,
    )


@pytest.mark.usefixtures("stats_layer")
async def test_sync_request_sends_one_statistic_message() -> None:
    def get() -> int:
        response = Client().get("/lobby/", headers={"user-agent": "sync-agent/2.0"})
        get_sender().drain_thread()
        return response.status_code

    assert await asyncio.to_thread(get) == 200
    message = await receive_statistic()
    assert (message["user_agent"], message["path"], message["status"]) == (
        "sync-agent/2.0",
        "/lobby/",
        200,
    )


# -- Redis down, frozen or full: responses stay fast and successful --------------------------


async def timed_async_requests(count: int) -> list[float]:
    client = AsyncClient()
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get("/lobby/", headers={"user-agent": "probe"})
        durations.append(time.perf_counter() - started)
        assert response.status_code == 200
    return durations


async def test_responses_stay_fast_with_redis_stopped(
    settings: SettingsWrapper,
    own_redis: RedisServer,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.CHANNEL_LAYERS = sample_channel_layers(own_redis.url, prefix)
    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="worker.sender"):
        durations = await timed_async_requests(20)
        await get_sender().drain()
    assert max(durations) < RESPONSE_BOUND_S, durations
    warnings = sender_warnings(caplog)
    assert len(warnings) == 1, [w.getMessage() for w in warnings]
    layer = get_channel_layer()
    assert layer is not None
    await layer.close()


def test_sync_responses_stay_fast_with_redis_stopped(
    settings: SettingsWrapper,
    own_redis: RedisServer,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.CHANNEL_LAYERS = sample_channel_layers(own_redis.url, prefix)
    own_redis.stop()
    client = Client()
    durations = []
    with caplog.at_level(logging.WARNING, logger="worker.sender"):
        for _ in range(20):
            started = time.perf_counter()
            response = client.get("/lobby/", headers={"user-agent": "probe"})
            durations.append(time.perf_counter() - started)
            assert response.status_code == 200
        get_sender().drain_thread()
    assert max(durations) < RESPONSE_BOUND_S, durations
    assert len(sender_warnings(caplog)) == 1


async def test_responses_stay_fast_with_redis_frozen(
    settings: SettingsWrapper,
    own_redis: RedisServer,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.CHANNEL_LAYERS = sample_channel_layers(own_redis.url, prefix)
    settings.STATISTIC_SEND_TIMEOUT = 0.1
    own_redis.pause()
    try:
        with caplog.at_level(logging.WARNING, logger="worker.sender"):
            durations = await timed_async_requests(10)
            started = time.perf_counter()
            await get_sender().drain()
            drained_in = time.perf_counter() - started
        assert max(durations) < RESPONSE_BOUND_S, durations
        # Every pending send gave up after its time budget.
        assert drained_in < 2.0
        [warning] = sender_warnings(caplog)
        assert "TimeoutError: no answer within 0.1 s" in warning.getMessage()
    finally:
        own_redis.resume()
        layer = get_channel_layer()
        assert layer is not None
        await layer.close()


async def test_full_channel_does_not_fail_requests(
    settings: SettingsWrapper,
    redis_url: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.CHANNEL_LAYERS = sample_channel_layers(redis_url, prefix, capacity=2)
    try:
        with caplog.at_level(logging.WARNING, logger="worker.sender"):
            durations: list[float] = []
            for _ in range(5):
                durations = [*durations, *await timed_async_requests(1)]
                await get_sender().drain()  # in order, so the first two fit
        assert max(durations) < RESPONSE_BOUND_S
        warnings = sender_warnings(caplog)
        assert len(warnings) == 1
        assert "ChannelFull" in warnings[0].getMessage()
        assert (await receive_statistic())["path"] == "/lobby/"
        assert (await receive_statistic())["path"] == "/lobby/"
    finally:
        layer = get_channel_layer()
        assert layer is not None
        await layer.close()


async def test_a_statistics_layer_alias_missing_from_the_settings_is_a_logged_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.sender")
    sender = StatisticSender(
        layer_alias="no-such-alias", failures=FailureLog(logging.getLogger("worker.sender"))
    )
    await sender.send({"type": "request.statistic"})
    assert any("no-such-alias" in record.getMessage() for record in caplog.records)
