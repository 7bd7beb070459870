"""The topology fixtures themselves, checked with plain redis-py.

If these fail, the layer's topology tests cannot be trusted: a cluster that
is not fully replicated never fails over, a sentinel that has not met its
peers never reaches quorum.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.exceptions
from channels_redis.utils import create_pool

from devtools.redis_topologies import (
    RedisAclServer,
    RedisCluster,
    RedisSentinel,
    RedisTlsServer,
    async_client,
    layer_acl_rules,
)

pytestmark = pytest.mark.timeout(60)


def _replication(port: int) -> dict[str, object]:
    client = redis.Redis(port=port)
    try:
        info: dict[str, object] = client.info("replication")
    finally:
        client.close()
    return info


# -- cluster -------------------------------------------------------------------


@pytest.mark.cluster
def test_cluster_has_three_masters_each_with_a_linked_replica(redis_cluster: RedisCluster) -> None:
    view = redis_cluster.cluster_nodes()
    masters = [node for node in view if node.is_master]
    replicas = [node for node in view if "slave" in node.flags]
    assert len(masters) == 3
    assert len(replicas) == 3
    assert {replica.master_id for replica in replicas} == {master.node_id for master in masters}
    for replica in replicas:
        assert _replication(replica.port)["master_link_status"] == "up"
    assert redis_cluster.url.startswith("redis+cluster://127.0.0.1:")


@pytest.mark.cluster
async def test_cluster_serves_keys_of_every_slot_range(redis_cluster: RedisCluster) -> None:
    client = async_client(redis_cluster.url)
    assert isinstance(client, redis.asyncio.cluster.RedisCluster)
    try:
        keys = [f"fixture:{{k{i}}}" for i in range(30)]
        for key in keys:
            await client.set(key, key)
        owners = {redis_cluster.master_of(key).port for key in keys}
        assert len(owners) == 3, "30 hash tags should land on all three masters"
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
        assert redis_cluster.keyslot("a:{tag}:x") == redis_cluster.keyslot("b:{tag}:y")
    finally:
        await client.delete(*keys)
        await client.aclose()


@pytest.mark.cluster
@pytest.mark.slow
async def test_cluster_replica_takes_over_a_killed_master(own_cluster: RedisCluster) -> None:
    client = async_client(own_cluster.url)
    try:
        await client.set("fixture:{busy}", "before")
        # Replication is asynchronous: without this the write may die with the master.
        await asyncio.to_thread(own_cluster.wait_replicated)
        killed = own_cluster.kill_master_of("fixture:{busy}")
        assert not killed.is_running()
        took_s = await asyncio.to_thread(own_cluster.wait_failover)
        assert own_cluster.master_of("fixture:{busy}").port != killed.port
        assert await client.get("fixture:{busy}") == b"before"
        await client.set("fixture:{busy}", "after")
        assert took_s < 10
        await asyncio.to_thread(own_cluster.restore)
        assert len(own_cluster.masters()) == 3
        assert killed.is_running()
        assert _replication(killed.port)["role"] == "slave"
    finally:
        await client.aclose()


# -- sentinel ------------------------------------------------------------------


@pytest.mark.sentinel
async def test_sentinel_hosts_form_is_accepted_by_channels_redis(
    redis_sentinel: RedisSentinel,
) -> None:
    (host,) = redis_sentinel.hosts
    assert host["master_name"] == "mymaster"
    assert len(host["sentinels"]) == 3
    pool = create_pool(host)
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        await client.set("fixture:sentinel", "x")
        assert await client.get("fixture:sentinel") == b"x"
        master = redis_sentinel.master()
        assert (await client.info("server"))["tcp_port"] == master.port
    finally:
        await client.delete("fixture:sentinel")
        await client.aclose()
        await pool.disconnect()
        for sentinel_client in pool.sentinel_manager.sentinels:
            await sentinel_client.aclose()


@pytest.mark.sentinel
@pytest.mark.slow
async def test_sentinel_promotes_the_replica_of_a_killed_master(
    own_sentinel: RedisSentinel,
) -> None:
    sentinel = redis.asyncio.sentinel.Sentinel(own_sentinel.sentinel_addresses)  # type: ignore[no-untyped-call]
    client = sentinel.master_for("mymaster", socket_timeout=1.0)
    try:
        await client.set("fixture:sentinel", "before")
        replica = own_sentinel.servers[1]
        await asyncio.to_thread(own_sentinel.wait_replicated)
        killed = own_sentinel.kill_master()
        took_s = await asyncio.to_thread(own_sentinel.wait_failover)
        assert own_sentinel.master().port == replica.port != killed.port
        assert await client.get("fixture:sentinel") == b"before"
        assert took_s < 10
    finally:
        await client.aclose()
        for sentinel_client in sentinel.sentinels:
            await sentinel_client.aclose()


# -- TLS -----------------------------------------------------------------------


@pytest.mark.tls
async def test_tls_server_answers_clients_with_certificates(redis_tls: RedisTlsServer) -> None:
    assert redis_tls.url.startswith("rediss://127.0.0.1:")
    for client in (
        redis.asyncio.Redis.from_url(redis_tls.url, **redis_tls.ssl_kwargs),
        redis.asyncio.Redis.from_url(redis_tls.url_with_certificates),
    ):
        try:
            assert await client.ping()
        finally:
            await client.aclose()


@pytest.mark.tls
async def test_tls_server_refuses_a_client_without_certificate(redis_tls: RedisTlsServer) -> None:
    client = redis.asyncio.Redis.from_url(
        redis_tls.url, ssl_ca_certs=redis_tls.ssl_kwargs["ssl_ca_certs"], socket_timeout=2
    )
    try:
        with pytest.raises((redis.exceptions.ConnectionError, ssl.SSLError)):
            await client.ping()
    finally:
        await client.aclose()


@pytest.mark.tls
async def test_tls_server_refuses_an_unknown_ca(redis_tls: RedisTlsServer) -> None:
    client = redis.asyncio.Redis.from_url(redis_tls.url, socket_timeout=2)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()


# -- ACL -----------------------------------------------------------------------


async def test_acl_user_is_limited_to_its_prefix(redis_acl: RedisAclServer, prefix: str) -> None:
    url = redis_acl.add_user(f"u{prefix}", "pw", layer_acl_rules(prefix))
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.xadd(f"{prefix}:chan:{{x}}", {"m": "1"})
        assert await client.xlen(f"{prefix}:chan:{{x}}") == 1
        with pytest.raises(
            redis.exceptions.NoPermissionError, match="no permissions to access one of the keys"
        ):
            await client.set(f"other{prefix}", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.flushall()
    finally:
        await client.aclose()
    denied = [entry for entry in redis_acl.acl_log() if entry["username"] == f"u{prefix}"]
    assert {entry["reason"] for entry in denied} == {"key", "command"}
