"""``streams_status`` and ``layer.status()`` on a live system, checked against XINFO."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from django.core.management import call_command
from pytest_django.fixtures import Settings as SettingsWrapper

from streams_layer import RedisStreamsChannelLayer
from streams_layer.keys import KeySpace

ROOT = Path(__file__).resolve().parent.parent
IDLE_TOLERANCE_MS = 5000


@pytest.fixture
async def live(redis_url: str, prefix: str) -> AsyncIterator[RedisStreamsChannelLayer]:
    """A layer with a channel read by two teams, a dead letter, a group, an inbox, a history."""
    layer = RedisStreamsChannelLayer(hosts=[redis_url], prefix=prefix, capacity=1000)
    for n in range(6):
        await layer.send("statistic", {"type": "job", "n": n})
    stats = layer.consume("statistic", team="stats", consumer="host-1", max_deliveries=1, batch=4)
    await stats.__aenter__()
    deliveries = [await stats.__anext__() for _ in range(4)]
    await deliveries[0].ack()
    await deliveries[1].fail("broken")  # last allowed delivery: a dead letter
    await stats._flush_all_acks()
    # Team "audit" exists but has read nothing; its consumer read nothing either.
    async with layer.consume("statistic", team="audit", consumer="auditor", block_ms=10):
        pass
    specific = await layer.new_channel()
    await layer.group_add("room", specific)
    await layer.group_send_recorded("room", {"type": "chat", "text": "hi"})
    try:
        yield layer
    finally:
        await layer.close()


async def xinfo_of(client: redis.asyncio.Redis, key: str) -> dict[str, Any]:
    groups = {}
    for group in await client.xinfo_groups(key):
        name = group["name"].decode()
        consumers = await client.xinfo_consumers(key, name)
        groups[name] = {
            "pending": int(group["pending"]),
            "lag": group["lag"],
            "last_delivered_id": group["last-delivered-id"].decode(),
            "consumers": {
                c["name"].decode(): (int(c["pending"]), int(c["idle"])) for c in consumers
            },
        }
    return groups


def check_against_xinfo(entry: dict[str, Any], xinfo: dict[str, Any]) -> None:
    teams = {team["name"]: team for team in entry["teams"]}
    assert set(teams) == set(xinfo)
    for name, expected in xinfo.items():
        team = teams[name]
        assert team["pending"] == expected["pending"]
        assert team["lag"] == expected["lag"]
        assert team["last_delivered_id"] == expected["last_delivered_id"]
        consumers = {c["name"]: c for c in team["consumers"]}
        assert set(consumers) == set(expected["consumers"])
        for consumer, (pending, idle_ms) in expected["consumers"].items():
            assert consumers[consumer]["pending"] == pending
            assert abs(consumers[consumer]["idle_ms"] - idle_ms) < IDLE_TOLERANCE_MS


async def test_status_matches_xinfo_from_a_separate_client(
    live: RedisStreamsChannelLayer,
    redis_client: redis.asyncio.Redis,
    prefix: str,
    redis_url: str,
    settings: SettingsWrapper,
) -> None:
    keys = KeySpace(prefix)
    channel_key = keys.channel("statistic")
    xinfo = await xinfo_of(redis_client, channel_key)
    # The figures the scenario produced, as Redis itself reports them.
    assert xinfo["stats"]["pending"] == 2
    assert xinfo["stats"]["lag"] == 2
    assert xinfo["audit"]["pending"] == 0
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "streams_layer.RedisStreamsChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    out = io.StringIO()
    await asyncio.to_thread(call_command, "streams_status", "--json", stdout=out)
    status = json.loads(out.getvalue())
    assert status["prefix"] == prefix
    by_kind = {(k["kind"], k["name"]): k for k in status["keys"]}
    channel = by_kind[("channel", "statistic")]
    assert channel["key"] == channel_key
    assert channel["length"] == await redis_client.xlen(channel_key)
    assert channel["dead_letters"] == await redis_client.xlen(keys.dead("statistic")) == 1
    first: Any = await redis_client.xrange(channel_key, count=1)
    first_id = first[0][0]
    server_s, _micros = await redis_client.time()
    expected_age_ms = server_s * 1000 - int(first_id.split(b"-")[0])
    assert abs(channel["oldest_age_ms"] - expected_age_ms) < IDLE_TOLERANCE_MS
    assert 0 < channel["ttl_s"] <= await redis_client.ttl(channel_key) + 1
    check_against_xinfo(channel, xinfo)

    dead = by_kind[("dead letters", "statistic")]
    assert dead["length"] == 1
    assert by_kind[("group", "room")]["length"] == 1
    assert by_kind[("group history", "room")]["length"] == 1
    inbox = by_kind[("inbox", live.client_id)]
    assert inbox["length"] == await redis_client.xlen(keys.inbox(live.client_id))
    check_against_xinfo(inbox, await xinfo_of(redis_client, keys.inbox(live.client_id)))
    assert ("inbox counts", live.client_id) in by_kind

    # The same figures in the readable table.
    table = io.StringIO()
    await asyncio.to_thread(call_command, "streams_status", stdout=table)
    text = table.getvalue()
    assert "channel" in text
    assert "team stats: pending 2, lag 2" in text
    audit_lag = "?" if xinfo["audit"]["lag"] is None else str(xinfo["audit"]["lag"])
    assert f"team audit: pending 0, lag {audit_lag}" in text
    assert "consumer host-1: pending 2" in text
    assert "dead letters" in text


async def test_status_of_an_empty_prefix(redis_url: str, prefix: str) -> None:
    layer = RedisStreamsChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        status = await layer.status()
    finally:
        await layer.close()
    assert status.keys == []
    assert "no keys" in status.render()


@pytest.mark.slow
async def test_watch_refreshes_until_interrupted(
    live: RedisStreamsChannelLayer, redis_url: str, prefix: str
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": prefix,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONUNBUFFERED": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "manage.py"),
        "streams_status",
        "--watch",
        "--json",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines = [await asyncio.wait_for(process.stdout.readline(), 30) for _ in range(2)]
    process.send_signal(signal.SIGINT)
    raw_out, raw_err = await asyncio.wait_for(process.communicate(), 15)
    out, err = b"".join(lines).decode() + raw_out.decode(), raw_err.decode()
    assert process.returncode == 0, err
    snapshots = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(snapshots) >= 2
    assert all(s["prefix"] == prefix for s in snapshots)
