"""The statistic worker: every message counted exactly once, in one process or several."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import OperationalError
from django.db.models import Sum
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from streams_layer import RedisStreamsChannelLayer
from tests.layer_helpers import sample_channel_layers
from worker.aggregate import count_message, forget_counted
from worker.consuming import (
    TeamSpec,
    WorkerCounters,
    forget_counted_regularly,
    make_handler,
    run_team,
)
from worker.models import CountedMessage, RequestStat
from worker.records import make_record

ROOT = Path(__file__).resolve().parent.parent
CLAIM_IDLE_MS = 300
AGENTS = ("agent-a", "agent-b", "agent-c")
IPS = ("10.0.0.1", "10.0.0.2")
WAIT_S = 60.0


def layer_settings(url: str, prefix: str, **config: Any) -> dict[str, Any]:
    return sample_channel_layers(url, prefix, capacity=100_000, **config)


def statistic_messages(count: int) -> list[dict[str, Any]]:
    return [
        make_record(
            user_agent=AGENTS[number % len(AGENTS)],
            client_ip=IPS[number % len(IPS)],
            method="GET",
            path=f"/p{number}/",
            status=200,
        ).to_message()
        for number in range(count)
    ]


def expected_by_agent(count: int) -> dict[str, int]:
    return dict(Counter(AGENTS[number % len(AGENTS)] for number in range(count)))


async def wait_until(condition: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.05)


def db_counts() -> dict[str, int]:
    rows = RequestStat.objects.values("user_agent").annotate(requests=Sum("count"))
    return {row["user_agent"]: row["requests"] for row in rows}


@pytest.mark.django_db(transaction=True)
async def test_team_of_two_consumers_counts_every_message_once(
    settings: SettingsWrapper, redis_url: str, prefix: str
) -> None:
    settings.CHANNEL_LAYERS = layer_settings(redis_url, prefix)
    layer = get_channel_layer()
    assert layer is not None
    total = 300
    for message in statistic_messages(total):
        await layer.send("statistic", message)
    await layer.send("statistic", {"type": "request.statistic", "user_agent": 5})
    counters = WorkerCounters()
    stop = asyncio.Event()
    spec = TeamSpec(channel="statistic", team="stats", consumers=2)
    team = asyncio.create_task(run_team(layer, spec, stop=stop, counters=counters))
    try:
        await wait_until(lambda: counters.processed + counters.invalid >= total + 1)
        await asyncio.sleep(0.5)  # nothing more may arrive
    finally:
        stop.set()
        await asyncio.wait_for(team, 10)
        await layer.close()
    assert counters.processed == total
    assert counters.invalid == 1
    assert sum(counters.per_consumer.values()) == total
    assert set(counters.per_consumer) <= {"stats-1", "stats-2"}
    assert await sync_to_async(db_counts)() == expected_by_agent(total)


@pytest.mark.django_db(transaction=True)
async def test_team_stops_promptly_when_idle(
    settings: SettingsWrapper, redis_url: str, prefix: str
) -> None:
    settings.CHANNEL_LAYERS = layer_settings(redis_url, prefix)
    layer = get_channel_layer()
    assert layer is not None
    stop = asyncio.Event()
    spec = TeamSpec(channel="statistic", team="idle", consumers=3)
    team = asyncio.create_task(run_team(layer, spec, stop=stop, counters=WorkerCounters()))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(team, 5)
    assert time.monotonic() - started < 1.0
    await layer.close()


@pytest.mark.django_db(transaction=True)
async def test_a_message_handled_again_after_its_worker_died_unacknowledged_counts_once(
    settings: SettingsWrapper, redis_url: str, prefix: str
) -> None:
    """The window between the database commit and the acknowledgement: the
    first worker counts the message and dies before its ack reaches Redis; a
    teammate claims the message, handles it again, and must not count it again."""
    settings.CHANNEL_LAYERS = layer_settings(redis_url, prefix)
    layer: Any = get_channel_layer()
    await layer.send("statistic", statistic_messages(1)[0])
    counters = WorkerCounters()
    options = {"team": "stats", "claim_idle_ms": CLAIM_IDLE_MS}
    try:
        async with layer.consume("statistic", consumer="first", **options) as first:
            async for delivery in first:
                await make_handler(counters, "first", "statistic")(delivery.message, delivery.id)
                break  # never settled: the message stays pending for the team
        async with layer.consume("statistic", consumer="second", **options) as second:
            async for delivery in second:
                assert delivery.deliveries == 2
                async with delivery:
                    handle = make_handler(counters, "second", "statistic")
                    await handle(delivery.message, delivery.id)
                break
    finally:
        await layer.close()
    assert (counters.processed, counters.repeated) == (1, 1)
    assert counters.per_consumer == {"first": 1}
    assert await sync_to_async(db_counts)() == {AGENTS[0]: 1}


@pytest.mark.django_db
def test_the_same_entry_of_another_channel_counts_and_old_records_are_forgotten() -> None:
    record = make_record(user_agent="ua", client_ip="10.0.0.9", method="GET", path="/", status=200)
    assert count_message(record, channel="statistic", entry_id="1-0")
    assert not count_message(record, channel="statistic", entry_id="1-0")
    assert count_message(record, channel="statistic.other", entry_id="1-0")
    assert db_counts() == {"ua": 2}
    CountedMessage.objects.filter(channel="statistic").update(
        counted_at=timezone.now() - timedelta(days=2)
    )
    assert forget_counted(before=timezone.now() - timedelta(days=1)) == 1
    assert list(CountedMessage.objects.values_list("channel", flat=True)) == ["statistic.other"]


@pytest.mark.django_db(transaction=True)
async def test_forgetting_old_ids_survives_a_database_error_and_stops_on_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[datetime] = []

    def failing(*, before: datetime) -> int:
        calls.append(before)
        raise OperationalError("database is locked")

    monkeypatch.setattr("worker.consuming.forget_counted", failing)
    stop = asyncio.Event()
    forgetting = asyncio.create_task(
        forget_counted_regularly(expiry_s=60.0, stop=stop, interval_s=0.05)
    )
    await wait_until(lambda: len(calls) >= 2, timeout_s=5)
    stop.set()
    await asyncio.wait_for(forgetting, 5)
    assert "could not forget old counted message ids" in caplog.text
    assert timezone.now() - calls[0] > timedelta(seconds=60)


# -- the management command as real processes --------------------------------------------


def sqlite_total(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=10) as connection:
        try:
            row = connection.execute("SELECT COALESCE(SUM(count), 0) FROM worker_requeststat")
        except sqlite3.OperationalError:
            return 0
        return int(row.fetchone()[0])


def sqlite_by_agent(path: Path) -> dict[str, int]:
    with sqlite3.connect(path, timeout=10) as connection:
        rows = connection.execute(
            "SELECT user_agent, SUM(count) FROM worker_requeststat GROUP BY user_agent"
        ).fetchall()
    return {agent: int(count) for agent, count in rows}


async def send_all(redis_url: str, prefix: str, messages: list[dict[str, Any]]) -> None:
    layer = RedisStreamsChannelLayer(hosts=[redis_url], prefix=prefix, capacity=100_000)
    try:
        for message in messages:
            await layer.send("statistic", message)
    finally:
        await layer.close()


@pytest.mark.slow
def test_two_worker_processes_count_each_message_exactly_once(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    database = tmp_path / "db.sqlite3"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": prefix,
        "DJANGO_DB_PATH": str(database),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
    command = [*manage, "runworker_statistic", "--consumers", "2", "--progress-interval", "0.5"]
    workers = [
        subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    total = 400
    try:
        asyncio.run(send_all(redis_url, prefix, statistic_messages(total)))
        deadline = time.monotonic() + WAIT_S
        while sqlite_total(database) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a duplicate would show up by now
        assert sqlite_total(database) == total
        assert sqlite_by_agent(database) == expected_by_agent(total)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=20)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    processed = []
    for output in outputs:
        assert "msg/s" in output, output
        assert "pending=" in output, output
        final = [line for line in output.splitlines() if line.startswith("stopped: processed=")]
        assert len(final) == 1, output
        processed.append(int(final[0].split("processed=")[1].split()[0]))
    assert sum(processed) == total
