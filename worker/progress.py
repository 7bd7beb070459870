"""Live progress of the statistic worker: messages/s, processed, pending."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio
import redis.exceptions

from streams_layer.config import decode_hosts
from streams_layer.keys import KeySpace

logger = logging.getLogger(__name__)


class PendingProbe:
    """Reads how many messages of a team wait on a channel stream (XINFO GROUPS).

    Pending is the team's lag (entries not yet read) plus its entries read but
    not yet acknowledged. Only plain ``redis://`` hosts are probed; for other
    topologies :meth:`pending` returns ``None``.
    """

    def __init__(self, config: dict[str, Any], channel: str, team: str) -> None:
        self.team = team
        self.key = KeySpace(str(config.get("prefix", "asgi"))).channel(channel)
        host = decode_hosts(config.get("hosts"))[0]
        self._client: redis.asyncio.Redis | None = None
        address = host.get("address")
        if isinstance(address, str) and address.startswith(("redis://", "rediss://", "unix://")):
            self._client = redis.asyncio.Redis.from_url(
                address, socket_timeout=1.0, socket_connect_timeout=1.0
            )

    async def pending(self) -> int | None:
        """Messages not yet processed by the team, or ``None`` when unknown."""
        if self._client is None:
            return None
        try:
            groups = await self._client.xinfo_groups(self.key)
        except redis.exceptions.ResponseError:
            return 0  # no such stream yet: nothing was ever sent
        except (redis.exceptions.RedisError, OSError):
            return None
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.team:
                lag = group.get("lag")
                return None if lag is None else int(lag) + int(group.get("pending", 0))
        return None

    async def close(self) -> None:
        """Close the probe's connection."""
        if self._client is not None:
            await self._client.aclose()


class RateMeter:
    """Messages per second between successive readings."""

    def __init__(self) -> None:
        self._last_time = time.monotonic()
        self._last_count = 0

    def rate(self, count: int) -> float:
        """The rate since the previous call, given the running total ``count``."""
        now = time.monotonic()
        elapsed = now - self._last_time
        rate = (count - self._last_count) / elapsed if elapsed > 0 else 0.0
        self._last_time, self._last_count = now, count
        return rate
