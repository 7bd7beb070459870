"""The layer over TLS (a CA made by openssl, client certificates) and as an ACL user.

An ACL user limited to ``~<prefix>:*`` (the rule in ``docs/deployment.md``)
can do everything the layer does; a user without access gets an error that
names the permission problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devtools.redis_topologies import RedisAclServer, RedisTlsServer, layer_acl_rules
from streams_layer import RedisStreamsChannelLayer, StreamsLayerError

pytestmark = pytest.mark.timeout(60)

RECEIVE_TIMEOUT_S = 5.0


async def _exercise(layer: RedisStreamsChannelLayer) -> None:
    """Every operation of the layer: send/receive on both kinds, groups, history, teams, flush."""
    await layer.send("normal", {"type": "t", "n": 1})
    assert (await asyncio.wait_for(layer.receive("normal"), RECEIVE_TIMEOUT_S))["n"] == 1
    specific = await layer.new_channel()
    await layer.send(specific, {"type": "t", "n": 2})
    assert (await asyncio.wait_for(layer.receive(specific), RECEIVE_TIMEOUT_S))["n"] == 2
    await layer.group_add("room", specific)
    await layer.group_send("room", {"type": "t", "n": 3})
    assert (await asyncio.wait_for(layer.receive(specific), RECEIVE_TIMEOUT_S))["n"] == 3
    await layer.group_send_recorded("room", {"type": "t", "n": 4})
    assert (await asyncio.wait_for(layer.receive(specific), RECEIVE_TIMEOUT_S))["n"] == 4
    assert [m["n"] for m in (await layer.group_history("room")).messages] == [4]
    await layer.group_discard("room", specific)
    await layer.send("work", {"type": "t", "n": 5})
    async with layer.consume("work", team="t", consumer="c1") as team:
        delivery = await asyncio.wait_for(team.__anext__(), RECEIVE_TIMEOUT_S)
        async with delivery:
            assert delivery.message["n"] == 5
    await layer.status()
    await layer.flush()


@pytest.fixture
async def tls_layer(redis_tls: RedisTlsServer, prefix: str) -> AsyncIterator[Any]:
    layer = RedisStreamsChannelLayer(
        hosts=[{"address": redis_tls.url, **redis_tls.ssl_kwargs}], prefix=prefix
    )
    yield layer
    await layer.close_pools()


@pytest.mark.tls
async def test_layer_works_over_tls_with_client_certificates(tls_layer: Any) -> None:
    await _exercise(tls_layer)


@pytest.mark.tls
async def test_layer_accepts_certificates_in_the_url(
    redis_tls: RedisTlsServer, prefix: str
) -> None:
    layer = RedisStreamsChannelLayer(hosts=[redis_tls.url_with_certificates], prefix=prefix)
    try:
        await layer.send("normal", {"type": "t"})
        assert await asyncio.wait_for(layer.receive("normal"), RECEIVE_TIMEOUT_S)
    finally:
        await layer.close_pools()


@pytest.mark.tls
async def test_layer_without_client_certificate_fails_clearly(
    redis_tls: RedisTlsServer, prefix: str
) -> None:
    ca_only = {"ssl_ca_certs": redis_tls.ssl_kwargs["ssl_ca_certs"], "socket_timeout": 2}
    layer = RedisStreamsChannelLayer(hosts=[{"address": redis_tls.url, **ca_only}], prefix=prefix)
    try:
        with pytest.raises(StreamsLayerError, match=r"(?i)redis unreachable"):
            await layer.send("normal", {"type": "t"})
    finally:
        await layer.close_pools()


@pytest.mark.parametrize("minimal", [False, True], ids=["all-but-dangerous", "minimal"])
async def test_acl_user_limited_to_the_prefix_can_do_everything(
    redis_acl: RedisAclServer, prefix: str, minimal: bool
) -> None:
    url = redis_acl.add_user(f"layer-{prefix}", "pw", layer_acl_rules(prefix, minimal=minimal))
    layer = RedisStreamsChannelLayer(hosts=[url], prefix=prefix)
    try:
        await _exercise(layer)
    finally:
        await layer.close_pools()
    denied = [e for e in redis_acl.acl_log() if e["username"] == f"layer-{prefix}"]
    assert denied == []


async def test_user_without_access_gets_an_error_naming_the_problem(
    redis_acl: RedisAclServer, prefix: str
) -> None:
    # Allowed to run commands, but on keys of another prefix only.
    url = redis_acl.add_user(f"other-{prefix}", "pw", layer_acl_rules(f"not{prefix}"))
    layer = RedisStreamsChannelLayer(hosts=[url], prefix=prefix)
    try:
        with pytest.raises(StreamsLayerError, match=r"(?i)no permissions") as caught:
            await layer.send("normal", {"type": "t"})
        print(f"\nACL error as the layer raises it: {caught.value}")
    finally:
        await layer.close_pools()
