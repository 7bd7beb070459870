"""The layer's configuration: channels_redis's CONFIG keys plus a few of ours.

Every default lives here as a named constant; the rest of the package refers
to these names and never repeats the numbers.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigurationError

DEFAULT_HOSTS: tuple[str, ...] = ("redis://localhost:6379",)
DEFAULT_PREFIX = "asgi"
DEFAULT_EXPIRY_S = 60
DEFAULT_GROUP_EXPIRY_S = 86400
DEFAULT_CAPACITY = 100
DEFAULT_SERIALIZER_FORMAT = "msgpack"
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_HISTORY_SIZE = 50
DEFAULT_TEAM = "default"
# A blocking read returns at least this often, so a silent receive() never
# meets redis-py's socket timeout (5 s by default in redis-py 8).
DEFAULT_BLOCK_MS = 2000
# Socket timeout for connections the layer creates itself: longer than any
# BLOCK, short enough to notice a dead server.
DEFAULT_SOCKET_TIMEOUT_S = 10.0
# Entries read by one XREADGROUP on an inbox.
DEFAULT_READ_COUNT = 512
# Keys live this much longer than the messages they hold, so that a TTL never
# removes a message that expiry has not.
KEY_TTL_MARGIN_S = 1
# Expired entries removed by one send: the work of expiring is spread over sends.
EXPIRE_BATCH = 64
# Capacity freed by receive() is returned to Redis at most this late, so one
# script call carries the capacity of many received messages.
GIVE_BACK_DELAY_S = 0.005
# Seconds between sweeps of local buffers for expired messages.
SWEEP_INTERVAL_S = 1.0
# Back-off bounds when Redis is unreachable from a reader.
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0

# Teams (streams_layer.team): entries read per XREADGROUP / XAUTOCLAIM.
DEFAULT_BATCH = 100
# An entry unacknowledged for this long is claimed by a live teammate.
DEFAULT_CLAIM_IDLE_MS = 30_000
# Deliveries of one entry before it moves to the dead letters.
DEFAULT_MAX_DELIVERIES = 5
# Dead-letter streams keep this many entries and live this long after the last one.
DEFAULT_DEAD_LETTER_MAXLEN = 10_000
DEFAULT_DEAD_LETTER_TTL_S = 7 * 86400
# Seconds a closing team consumer keeps trying to deliver its last acknowledgements.
TEAM_CLOSE_TIMEOUT_S = 5.0
# Acknowledgements sent per XACK (Lua's unpack() has a stack limit).
ACK_CHUNK = 1000

SERIALIZER_FORMATS = ("msgpack", "json")


@dataclass(frozen=True, kw_only=True)
class LayerConfig:
    """Validated settings of one layer instance. Units are in the names."""

    hosts: tuple[dict[str, Any], ...]
    prefix: str = DEFAULT_PREFIX
    expiry_s: int = DEFAULT_EXPIRY_S
    group_expiry_s: int = DEFAULT_GROUP_EXPIRY_S
    capacity: int = DEFAULT_CAPACITY
    channel_capacity: tuple[tuple[re.Pattern[str], int], ...] = ()
    symmetric_encryption_keys: tuple[str | bytes, ...] = ()
    serializer_format: str = DEFAULT_SERIALIZER_FORMAT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    history_size: int = DEFAULT_HISTORY_SIZE
    block_ms: int = DEFAULT_BLOCK_MS
    read_count: int = DEFAULT_READ_COUNT
    team: str = DEFAULT_TEAM

    @property
    def expiry_ms(self) -> int:
        return self.expiry_s * 1000

    @property
    def key_ttl_s(self) -> int:
        """TTL of message-holding keys."""
        return self.expiry_s + KEY_TTL_MARGIN_S

    def capacity_for(self, channel: str) -> int:
        """The first matching ``channel_capacity`` pattern wins, else ``capacity``."""
        for pattern, value in self.channel_capacity:
            if pattern.match(channel):
                return value
        return self.capacity


def decode_hosts(hosts: Any) -> tuple[dict[str, Any], ...]:
    """Turn every form of channels_redis's ``hosts`` into connection dicts.

    Accepted entries: a URL string, a ``(host, port)`` pair, a dict with
    ``address`` (plus redis-py connection kwargs), a Sentinel dict with
    ``sentinels`` and ``master_name``, or a dict of redis-py kwargs.
    """
    if hosts is None:
        hosts = DEFAULT_HOSTS
    if isinstance(hosts, (str, bytes)):
        raise ConfigurationError(
            f"hosts must be a list of Redis hosts, even if there is only one; got {hosts!r}"
        )
    if not isinstance(hosts, Iterable):
        raise ConfigurationError(f"hosts must be a list of Redis hosts; got {hosts!r}")
    result: list[dict[str, Any]] = []
    for entry in hosts:
        if isinstance(entry, Mapping):
            result.append(dict(entry))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:  # noqa: PLR2004
            result.append({"host": entry[0], "port": entry[1]})
        elif isinstance(entry, str):
            result.append({"address": entry})
        else:
            raise ConfigurationError(f"cannot read Redis host entry {entry!r}")
    if not result:
        result.append({"address": DEFAULT_HOSTS[0]})
    return tuple(result)


def compile_capacities(
    channel_capacity: Mapping[Any, int] | None,
) -> tuple[tuple[re.Pattern[str], int], ...]:
    """Globs become regular expressions; compiled patterns are kept as given."""
    compiled: list[tuple[re.Pattern[str], int]] = []
    for pattern, value in (channel_capacity or {}).items():
        _require_positive_int("channel_capacity value", value)
        if isinstance(pattern, re.Pattern):
            compiled.append((pattern, value))
        elif isinstance(pattern, str):
            compiled.append((re.compile(fnmatch.translate(pattern)), value))
        else:
            raise ConfigurationError(f"channel_capacity pattern must be str or regex: {pattern!r}")
    return tuple(compiled)


def _require_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
    return value


def build_config(  # noqa: PLR0913 - channels_redis's CONFIG keys, one argument each
    *,
    hosts: Any = None,
    prefix: str = DEFAULT_PREFIX,
    expiry: int = DEFAULT_EXPIRY_S,
    group_expiry: int = DEFAULT_GROUP_EXPIRY_S,
    capacity: int = DEFAULT_CAPACITY,
    channel_capacity: Mapping[Any, int] | None = None,
    symmetric_encryption_keys: Iterable[str | bytes] | None = None,
    serializer_format: str = DEFAULT_SERIALIZER_FORMAT,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    history_size: int = DEFAULT_HISTORY_SIZE,
    block_ms: int = DEFAULT_BLOCK_MS,
    read_count: int = DEFAULT_READ_COUNT,
    team: str = DEFAULT_TEAM,
    random_prefix_length: int | None = None,
) -> LayerConfig:
    """Validate CONFIG and return a :class:`LayerConfig`.

    ``random_prefix_length`` is accepted for channels_redis compatibility and
    ignored: stream entry IDs are already unique.

    Raises :class:`ConfigurationError` naming the offending key and value.
    """
    del random_prefix_length
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(f"prefix must be a non-empty str, got {prefix!r}")
    if serializer_format not in SERIALIZER_FORMATS:
        raise ConfigurationError(
            f"serializer_format must be one of {SERIALIZER_FORMATS}, got {serializer_format!r}"
        )
    if isinstance(symmetric_encryption_keys, (str, bytes)):
        raise ConfigurationError("symmetric_encryption_keys must be a list of keys, not one key")
    if not isinstance(team, str) or not team:
        raise ConfigurationError(f"team must be a non-empty str, got {team!r}")
    return LayerConfig(
        hosts=decode_hosts(hosts),
        prefix=prefix,
        expiry_s=_require_positive_int("expiry", expiry),
        group_expiry_s=_require_positive_int("group_expiry", group_expiry),
        capacity=_require_positive_int("capacity", capacity),
        channel_capacity=compile_capacities(channel_capacity),
        symmetric_encryption_keys=tuple(symmetric_encryption_keys or ()),
        serializer_format=serializer_format,
        max_message_bytes=_require_positive_int("max_message_bytes", max_message_bytes),
        history_size=_require_positive_int("history_size", history_size),
        block_ms=_require_positive_int("block_ms", block_ms),
        read_count=_require_positive_int("read_count", read_count),
        team=team,
    )
