"""Helpers shared by the ``test_layer_*`` modules.

The behaviour tests build their layers through :class:`LayerFactory`, which
closes every layer it built when the test ends, and assert through the
public API or through Redis itself (``SCAN``, ``XLEN``, ``TTL`` from a
separate client), never through the layer's private attributes.

``STREAMS_LAYER_TEST_BACKEND`` names another layer class to build instead
(for example ``channels_redis.core.RedisChannelLayer``): running the spec
tests against the reference implementation shows which of them encode the
Channels spec itself and which encode this project's promises.

Run as a script, this module is the child process of ``test_layer_processes``
(see :func:`main`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

import redis.asyncio
from django.utils.module_loading import import_string

DEFAULT_BACKEND = "streams_layer.RedisStreamsChannelLayer"
BACKEND_ENV = "STREAMS_LAYER_TEST_BACKEND"
# How long a receive() may take before the test calls it lost; short, so that a
# wrong implementation fails fast instead of hanging.
RECEIVE_TIMEOUT_S = 2.0
# How long to wait for a message that must not come.
NOTHING_TIMEOUT_S = 0.3

Message = dict[str, Any]


def layer_class() -> type[Any]:
    """The channel layer class under test."""
    cls: type[Any] = import_string(os.environ.get(BACKEND_ENV, DEFAULT_BACKEND))
    return cls


class LayerFactory:
    """Builds layers on one Redis with one key prefix and closes them all at the end."""

    def __init__(self, hosts: list[Any], prefix: str) -> None:
        self.hosts = hosts
        self.prefix = prefix
        self._layers: list[Any] = []

    def __call__(self, **config: Any) -> Any:
        """A new layer; ``config`` overrides the CONFIG keys (``hosts``, ``prefix`` too)."""
        config.setdefault("hosts", self.hosts)
        config.setdefault("prefix", self.prefix)
        layer = layer_class()(**config)
        self._layers.append(layer)
        return layer

    async def aclose(self) -> None:
        """Close every layer built here, in the running event loop."""
        for layer in self._layers:
            await close_layer(layer)
        self._layers.clear()


async def close_layer(layer: Any) -> None:
    """Close a layer's connections (``close_pools``, as both layers name it)."""
    await layer.close_pools()


async def receive_within(layer: Any, channel: str, timeout_s: float = RECEIVE_TIMEOUT_S) -> Message:
    """``layer.receive(channel)``, failing the test if nothing comes within ``timeout_s``."""
    message: Message = await asyncio.wait_for(layer.receive(channel), timeout_s)
    return message


async def receives_nothing(layer: Any, channel: str, timeout_s: float = NOTHING_TIMEOUT_S) -> bool:
    """Whether ``layer.receive(channel)`` stays empty for ``timeout_s``."""
    try:
        await asyncio.wait_for(layer.receive(channel), timeout_s)
    except TimeoutError:
        return True
    return False


async def keys_under(client: redis.asyncio.Redis, prefix: str) -> list[bytes]:
    """Every key whose name starts with ``prefix`` (SCAN, never KEYS)."""
    return sorted([key async for key in client.scan_iter(match=f"{prefix}*", count=1000)])


async def stream_keys(client: redis.asyncio.Redis, prefix: str) -> list[bytes]:
    """The keys under ``prefix`` that hold streams."""
    return [
        key
        for key in await keys_under(client, prefix)
        if await client.type(key) in (b"stream", "stream")
    ]


async def queued_entries(client: redis.asyncio.Redis, prefix: str) -> int:
    """The total ``XLEN`` of every stream under ``prefix`` except group histories."""
    total = 0
    for key in await stream_keys(client, prefix):
        if b":history:" not in key:
            total += int(await client.xlen(key))
    return total


async def raw_stream_bytes(client: redis.asyncio.Redis, prefix: str) -> bytes:
    """Every field name and value of every stream entry under ``prefix``, concatenated."""
    parts: list[bytes] = []
    for key in await stream_keys(client, prefix):
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(key)  # type: ignore[assignment]
        for _entry_id, fields in entries:
            for name, value in fields.items():
                parts.extend((name, value))
    return b"\x00".join(parts)


def numbered(count: int, **extra: Any) -> Iterable[Message]:
    """``count`` messages ``{"type": "test.n", "n": i}`` with ``extra`` keys."""
    for i in range(count):
        yield {"type": "test.n", "n": i, **extra}


# -- child process of test_layer_processes --------------------------------------------


async def _receive_until_idle(layer: Any, channel: str, idle_s: float) -> list[int]:
    received: list[int] = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), idle_s)
        except TimeoutError:
            return received
        received.append(int(message["n"]))


async def _child(args: argparse.Namespace) -> None:
    layer = layer_class()(hosts=[args.url], prefix=args.prefix, capacity=args.capacity)
    try:
        if args.mode == "receive":
            channel = args.channel
        else:
            channel = await layer.new_channel()
        # The parent waits for this line before it starts sending.
        sys.stdout.write(json.dumps({"ready": channel}) + "\n")
        sys.stdout.flush()
        received = await _receive_until_idle_after_first(layer, channel, args.idle_s, args.first_s)
        sys.stdout.write(json.dumps({"received": received}) + "\n")
        sys.stdout.flush()
    finally:
        await layer.close_pools()


async def _receive_until_idle_after_first(
    layer: Any, channel: str, idle_s: float, first_s: float
) -> list[int]:
    # A longer wait for the first message: the parent may take a while to start sending.
    try:
        first = await asyncio.wait_for(layer.receive(channel), first_s)
    except TimeoutError:
        return []
    return [int(first["n"]), *await _receive_until_idle(layer, channel, idle_s)]


def main(argv: list[str] | None = None) -> None:
    """Receive numbered messages until idle and print their numbers as JSON.

    ``receive URL PREFIX CHANNEL`` reads a normal channel; ``specific URL
    PREFIX -`` makes a process-specific channel, prints its name in the
    ``ready`` line and reads that.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["receive", "specific"])
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("channel")
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--first-s", type=float, default=30.0)
    parser.add_argument("--capacity", type=int, default=100_000)
    asyncio.run(_child(parser.parse_args(argv)))


if __name__ == "__main__":
    main()


def sample_channel_layers(url: str, prefix: str, **config: Any) -> dict[str, Any]:
    """The sample project's CHANNEL_LAYERS on the test's Redis under the test's
    prefix: ``default`` (chat) and ``statistics``, one CONFIG for both."""
    layer = {
        "BACKEND": "streams_layer.RedisStreamsChannelLayer",
        "CONFIG": {"hosts": [url], "prefix": prefix, **config},
    }
    return {"default": layer, "statistics": layer}
