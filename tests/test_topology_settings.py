"""The sample project picks its Redis topology from ``REDIS_URL`` alone.

Each test imports ``project.settings`` in a fresh interpreter with only
``REDIS_URL`` (and the key prefix) set, builds the channel layer the way
Channels does (``get_channel_layer()``), sends a message to the ``statistic``
channel and to a process-specific channel and receives both. Then it looks
in Redis itself, through a client of the expected topology, for the key the
send created: it must be on that topology's server, and, for the single
Redis, not on any other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.redis_servers import RedisServer
from devtools.redis_topologies import RedisCluster, RedisSentinel, RedisTlsServer

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 45.0

# Run in the child: settings -> layer -> one send/receive on a normal and on a
# process-specific channel; prints what it saw as one JSON line.
CHILD = """
import asyncio, json
import django
django.setup()
from django.conf import settings
from channels.layers import get_channel_layer
from streams_layer.config import decode_hosts

SHOWN = ("address", "master_name", "sentinels")

async def main():
    layer = get_channel_layer()
    try:
        await layer.send("statistic", {"type": "probe", "n": 1})
        normal = await asyncio.wait_for(layer.receive("statistic"), 10)
        specific = await layer.new_channel()
        await layer.send(specific, {"type": "probe", "n": 2})
        direct = await asyncio.wait_for(layer.receive(specific), 10)
        await layer.send("left", {"type": "probe", "n": 3})
    finally:
        await layer.close_pools()
    hosts = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    decoded = [
        {key: value for key, value in host.items() if key in SHOWN}
        for host in decode_hosts(hosts)
    ]
    print(json.dumps({
        "backend": settings.CHANNEL_LAYERS["default"]["BACKEND"],
        "hosts": hosts,
        "decoded": decoded,
        "received": [normal["n"], direct["n"]],
    }))

asyncio.run(main())
"""


def run_sample_settings(redis_url: str, prefix: str) -> dict[str, Any]:
    """Import ``project.settings`` in a child with ``REDIS_URL`` set; return what it reports."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "CHANNEL_LAYER_PREFIX", "DJANGO_SETTINGS_MODULE")
    }
    env |= {
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": prefix,
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == "streams_layer.RedisStreamsChannelLayer"
    assert report["hosts"] == [redis_url]
    assert report["received"] == [1, 2]
    return report


def left_key(prefix: str) -> str:
    """The key of the channel the child sent to and never read."""
    return f"{prefix}:chan:{{left}}"


def exists_on(url: str, key: str, **kwargs: Any) -> bool:
    """Whether the single server at ``url`` holds ``key`` (a plain client, no redirects)."""
    with redis.Redis.from_url(url, **kwargs) as client:
        return bool(client.exists(key))


def test_plain_redis_url_selects_the_single_redis(redis_server: RedisServer, prefix: str) -> None:
    report = run_sample_settings(redis_server.url, prefix)
    assert report["decoded"] == [{"address": redis_server.url}]
    assert exists_on(redis_server.url, left_key(prefix))


@pytest.mark.tls
def test_rediss_url_with_certificates_selects_the_tls_server(
    redis_tls: RedisTlsServer, redis_server: RedisServer, prefix: str
) -> None:
    report = run_sample_settings(redis_tls.url_with_certificates, prefix)
    assert report["decoded"] == [{"address": redis_tls.url_with_certificates}]
    assert exists_on(redis_tls.url, left_key(prefix), **redis_tls.ssl_kwargs)
    assert not exists_on(redis_server.url, left_key(prefix))


@pytest.mark.cluster
def test_redis_cluster_url_selects_the_cluster(redis_cluster: RedisCluster, prefix: str) -> None:
    report = run_sample_settings(redis_cluster.url, prefix)
    assert report["decoded"] == [{"address": redis_cluster.url}]
    # The key sits on the master that owns its slot, read with a plain client:
    # only a cluster client could have put it there without a MOVED error.
    owner = redis_cluster.master_of(left_key(prefix))
    assert exists_on(owner.url, left_key(prefix))


@pytest.mark.sentinel
def test_redis_sentinel_url_selects_the_sentinel_master(
    redis_sentinel: RedisSentinel, prefix: str
) -> None:
    report = run_sample_settings(redis_sentinel.url, prefix)
    assert report["decoded"] == [
        {
            "sentinels": [list(address) for address in redis_sentinel.sentinel_addresses],
            "master_name": redis_sentinel.master_name,
        }
    ]
    master = redis_sentinel.master()
    assert exists_on(master.url, left_key(prefix))
