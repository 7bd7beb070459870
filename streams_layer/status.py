"""What is queued under a layer's prefix: every key, its teams and consumers.

:func:`collect_status` walks every key under the prefix (``SCAN`` on every
master of every shard; never ``KEYS``) and reads what Redis itself reports
(``XLEN``, ``XINFO GROUPS``, ``XINFO CONSUMERS``, ``TTL``). It backs
``layer.status()`` and the sample's ``manage.py streams_status``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from .connection import NETWORK_ERRORS, Client, scan_keys, translate
from .keys import CHANNEL, COUNTS_SUFFIX, DEAD, GROUP, HISTORY, INBOX, KeySpace

logger = logging.getLogger(__name__)

MS_PER_S = 1000
# Kind shown for each key type of the key space.
KIND_NAMES = {
    INBOX: "inbox",
    CHANNEL: "channel",
    GROUP: "group",
    HISTORY: "group history",
    DEAD: "dead letters",
}
INBOX_COUNTS_KIND = "inbox counts"


@dataclass(frozen=True)
class ConsumerStatus:
    """One consumer of a team (XINFO CONSUMERS)."""

    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None  # Redis 7.2+: since its last successful read


@dataclass(frozen=True)
class TeamStatus:
    """One team (consumer group) of a stream (XINFO GROUPS)."""

    name: str
    pending: int  # read, not yet acknowledged
    lag: int | None  # not yet read; None when Redis cannot tell
    last_delivered_id: str
    consumers: list[ConsumerStatus]


@dataclass(frozen=True)
class KeyStatus:
    """One key under the prefix."""

    key: str
    kind: str  # inbox, inbox counts, channel, group, group history, dead letters
    name: str
    length: int  # entries, members or fields
    oldest_age_ms: int | None  # age of the oldest entry or membership
    ttl_s: int | None  # None: no TTL
    teams: list[TeamStatus] = field(default_factory=list)
    dead_letters: int | None = None  # channels: entries in their dead-letter stream


@dataclass(frozen=True)
class LayerStatus:
    """Every key under one prefix, sorted by kind and name."""

    prefix: str
    keys: list[KeyStatus]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return dataclasses.asdict(self)

    def render(self) -> str:
        """A table for people, one line per key and per team and consumer below it."""
        if not self.keys:
            return f"no keys under prefix {self.prefix!r}\n"
        rows = [("KIND", "NAME", "LENGTH", "OLDEST", "TTL", "DEAD")]
        for key in self.keys:
            rows.append(
                (
                    key.kind,
                    key.name,
                    str(key.length),
                    _duration(key.oldest_age_ms),
                    "-" if key.ttl_s is None else f"{key.ttl_s}s",
                    "-" if key.dead_letters is None else str(key.dead_letters),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = []
        for index, row in enumerate(rows):
            lines.append(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
            if index:
                lines.extend(_team_lines(self.keys[index - 1]))
        return "\n".join(lines) + "\n"


def _team_lines(key: KeyStatus) -> list[str]:
    lines = []
    for team in key.teams:
        lag = "?" if team.lag is None else str(team.lag)
        lines.append(
            f"    team {team.name}: pending {team.pending}, lag {lag}, "
            f"last delivered {team.last_delivered_id}, {len(team.consumers)} consumer(s)"
        )
        lines.extend(
            f"      consumer {c.name}: pending {c.pending}, idle {_duration(c.idle_ms)}"
            for c in team.consumers
        )
    return lines


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < MS_PER_S:
        return f"{ms}ms"
    return f"{ms / MS_PER_S:.1f}s"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


async def collect_status(clients: Sequence[Client], keys: KeySpace) -> LayerStatus:
    """Read the status of every key under ``keys.prefix`` from every client.

    Raises :class:`~streams_layer.exceptions.LayerConnectionError` when a
    server is unreachable.
    """
    found: list[KeyStatus] = []
    try:
        for client in clients:
            now_ms = await _server_ms(client)
            async for key in scan_keys(client, keys.match_all):
                try:
                    status = await _key_status(client, keys, _text(key), now_ms)
                except ResponseError:
                    continue  # it changed type while we read it: not one of ours now
                if status is not None:
                    found.append(status)
    except NETWORK_ERRORS as exc:
        raise translate(exc) from exc
    dead = {k.name: k.length for k in found if k.kind == KIND_NAMES[DEAD]}
    found = [
        dataclasses.replace(k, dead_letters=dead.get(k.name, 0)) if k.kind == "channel" else k
        for k in found
    ]
    found.sort(key=lambda k: (k.kind, k.name, k.key))
    return LayerStatus(prefix=keys.prefix, keys=found)


async def _server_ms(client: Client) -> int:
    seconds, micros = await client.time()
    return int(seconds) * MS_PER_S + int(micros) // MS_PER_S


async def _key_status(client: Client, keys: KeySpace, key: str, now_ms: int) -> KeyStatus | None:
    parsed = keys.parse(key)
    if parsed is None:
        return None
    kind, name = parsed
    key_type = _text(await client.type(key))
    ttl = int(await client.ttl(key))
    ttl_s = ttl if ttl >= 0 else None
    if key_type == "stream":
        return await _stream_status(client, key, KIND_NAMES[kind], name, now_ms=now_ms, ttl_s=ttl_s)
    if key_type == "zset":
        oldest = await client.zrange(key, 0, 0, withscores=True)
        age = now_ms - int(oldest[0][1] * MS_PER_S) if oldest else None
        length = int(await client.zcard(key))
        return KeyStatus(key, KIND_NAMES[kind], name, length, age, ttl_s)
    if key_type == "hash" and key.endswith(COUNTS_SUFFIX):
        length = int(await client.hlen(key))
        return KeyStatus(key, INBOX_COUNTS_KIND, name, length, None, ttl_s)
    return None  # gone between SCAN and TYPE, or not one of ours


async def _stream_status(  # noqa: PLR0913 - one key's facts
    client: Client, key: str, kind: str, name: str, *, now_ms: int, ttl_s: int | None
) -> KeyStatus:
    length = int(await client.xlen(key))
    first: Any = await client.xrange(key, count=1)
    age = now_ms - int(_text(first[0][0]).split("-")[0]) if first else None
    teams = []
    try:
        groups = await client.xinfo_groups(key)
    except ResponseError:
        groups = []  # the key vanished after TYPE
    for group in groups:
        team = _text(group["name"])
        try:
            consumers = await client.xinfo_consumers(key, team)
        except ResponseError:
            continue  # the team (or the key) vanished after XINFO GROUPS
        teams.append(
            TeamStatus(
                name=team,
                pending=int(group["pending"]),
                lag=_int_or_none(group.get("lag")),
                last_delivered_id=_text(group["last-delivered-id"]),
                consumers=[
                    ConsumerStatus(
                        name=_text(c["name"]),
                        pending=int(c["pending"]),
                        idle_ms=int(c["idle"]),
                        inactive_ms=_int_or_none(c.get("inactive")),
                    )
                    for c in consumers
                ],
            )
        )
    return KeyStatus(key, kind, name, length, age, ttl_s, teams)
