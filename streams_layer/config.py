"""The layer's configuration: channels_redis's CONFIG keys plus a few of ours.

Every default lives here as a named constant; the rest of the package refers
to these names and never repeats the numbers.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode

from channels_redis.serializers import registry
from redis.asyncio.connection import parse_url

from .exceptions import ConfigurationError

DEFAULT_HOSTS: tuple[str, ...] = ("redis://localhost:6379",)
# ``redis+sentinel://`` URLs (see decode_sentinel_url): the port of a sentinel
# given without one, and the query prefix of options meant for the sentinels.
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_OPTION_PREFIX = "sentinel_"
DEFAULT_PREFIX = "asgi"
DEFAULT_EXPIRY_S = 60
DEFAULT_GROUP_EXPIRY_S = 86400
DEFAULT_CAPACITY = 100
DEFAULT_SERIALIZER_FORMAT = "msgpack"
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
# Containers nested in a msgpack message, the message itself counting as one;
# deeper messages (and cyclic ones) are refused at send (serializers._check_nested).
# Measured with msgpack 1.2: it packs 1025 levels but reads back only 1024, so
# a message near its own limit would be written and never received.
MAX_MESSAGE_DEPTH = 512
DEFAULT_HISTORY_SIZE = 50
DEFAULT_TEAM = "default"
# A blocking read returns at least this often, so a silent receive() never
# meets redis-py's socket timeout (5 s by default in redis-py 8).
DEFAULT_BLOCK_MS = 2000
# Socket timeout for connections the layer creates itself: longer than any
# BLOCK, short enough to notice a dead server.
DEFAULT_SOCKET_TIMEOUT_S = 10.0
# How late Redis may end a blocking read: timeouts are checked on its cron
# tick (hz 10: every 100 ms; measured: BLOCK 240 returned after 0.30 s).
BLOCK_LATE_S = 0.25
# A blocking read whose reply redis-py reads blocks at most this share of the
# socket timeout (connection.capped_block_ms).
BLOCK_TIMEOUT_SHARE = 0.5
# Entries read by one XREADGROUP on an inbox.
DEFAULT_READ_COUNT = 512
# Keys live this much longer than the messages they hold, so that a TTL never
# removes a message that expiry has not.
KEY_TTL_MARGIN_S = 1
# A key's TTL is set again only once it has fallen this far below the full
# TTL (scripts' keep_alive): less than the margin, so a key always outlives
# its newest message.
KEY_TTL_SLACK_MS = KEY_TTL_MARGIN_S * 1000 // 2
# Expired entries removed by one send: the work of expiring is spread over sends.
EXPIRE_BATCH = 64
# Entries an inbox may hold before sends look for expired ones to remove; a
# reader that keeps up trims what it read every TRIM_INTERVAL_S, or sooner
# once it has read TRIM_EVERY entries, so it stays below this.
INBOX_BACKLOG = 100
TRIM_EVERY = INBOX_BACKLOG // 2
# Unread inbox entries a send looks through to count a nearly full channel's
# group messages exactly; with more unread than this the channel counts as full.
UNREAD_SCAN = 1000
# An inbox takes no more group entries while this many times the members'
# capacity of them wait unread: its reader is that far behind, or gone.
GROUP_UNREAD_FACTOR = 4
# Idle connections an inbox reader and the normal-channel receives of one
# event loop keep per client between reads (connection.KeptConnections).
KEPT_CONNECTIONS_MAX = 8
# How long closing a layer waits for commands already queued (a give-back).
CLOSE_DRAIN_S = 2.0
# Fields of an inbox's counts hash besides channel names ('~' is never in one):
# group entries added, and group entries the reader has read.
GROUP_ADDED_FIELD = "~g"
GROUP_READ_FIELD = "~r"
# group_send keeps the members of groups at least this large between sends
# (checking only the group's version key); smaller groups are read each time.
GROUP_CACHE_MIN_MEMBERS = 32
# How many groups, and how many members over all of them, a layer instance
# keeps at most (about 100 bytes a member): past either, it starts afresh.
GROUP_CACHE_SIZE = 1024
GROUP_CACHE_MEMBERS = 100_000
# An inbox reader keeps reading this long after its loop's last waiting
# receive() returned, once that loop has waited in receive() twice (a
# consumer's receive loop, not one async_to_sync call): the next read is
# then already waiting in Redis when the next message comes. Stopping and
# restarting the reader between the receives of a two-process ping-pong
# made the round trip 22-31 % longer.
READER_LINGER_S = 1.0
# Capacity freed by receive() is returned to Redis at most this late, so one
# script call carries the capacity of many received messages.
GIVE_BACK_DELAY_S = 0.005
# ... unless a channel has given up this share of its capacity meanwhile: then
# at once (the next loop iteration). At 20,000 messages/s a 5 ms delay alone
# held back a channel's whole default capacity, and senders met ChannelFull
# against a receiver that kept up.
GIVE_BACK_EAGER_SHARE = 4
# A give-back that failed (Redis away) is tried again this much later.
GIVE_BACK_RETRY_S = 0.2
# Seconds between trims of entries an inbox reader has already read.
TRIM_INTERVAL_S = 0.1
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


class ChannelPattern(Protocol):
    """A ``channel_capacity`` key: a compiled regex, or any object with ``match``."""

    def match(self, channel: str, /) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class LayerConfig:
    """Validated settings of one layer instance. Units are in the names."""

    hosts: tuple[dict[str, Any], ...]
    prefix: str = DEFAULT_PREFIX
    expiry_s: float = DEFAULT_EXPIRY_S
    group_expiry_s: int = DEFAULT_GROUP_EXPIRY_S
    capacity: int = DEFAULT_CAPACITY
    channel_capacity: tuple[tuple[ChannelPattern, int], ...] = ()
    symmetric_encryption_keys: tuple[str | bytes, ...] = ()
    serializer_format: str = DEFAULT_SERIALIZER_FORMAT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    history_size: int = DEFAULT_HISTORY_SIZE
    block_ms: int = DEFAULT_BLOCK_MS
    read_count: int = DEFAULT_READ_COUNT
    team: str = DEFAULT_TEAM
    same_process_shortcut: bool = False

    @property
    def expiry_ms(self) -> int:
        return round(self.expiry_s * 1000)

    @property
    def key_ttl_s(self) -> int:
        """TTL of message-holding keys (whole seconds, as EXPIRE takes them)."""
        return math.ceil(self.expiry_s) + KEY_TTL_MARGIN_S

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
    A ``redis+sentinel://`` URL, alone or as the ``address`` of a dict,
    becomes the Sentinel dict (see :func:`decode_sentinel_url`).
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
        if isinstance(entry, Mapping) and is_sentinel_url(entry.get("address")):
            extra = {key: value for key, value in entry.items() if key != "address"}
            result.append({**decode_sentinel_url(entry["address"]), **extra})
        elif isinstance(entry, Mapping):
            result.append(dict(entry))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:  # noqa: PLR2004
            result.append({"host": entry[0], "port": entry[1]})
        elif isinstance(entry, str) and is_sentinel_url(entry):
            result.append(decode_sentinel_url(entry))
        elif isinstance(entry, str):
            result.append({"address": entry})
        else:
            raise ConfigurationError(f"cannot read Redis host entry {entry!r}")
    if not result:
        result.append({"address": DEFAULT_HOSTS[0]})
    return tuple(result)


def is_sentinel_url(value: object) -> bool:
    """Whether ``value`` is a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    return isinstance(value, str) and value.partition("://")[0].lower() in SENTINEL_SCHEMES


def decode_sentinel_url(url: str) -> dict[str, Any]:
    """Turn a Sentinel URL into channels_redis's Sentinel ``hosts`` dict.

    The form (the one Redis-Sentinel-Url, Prefect and RedisVL read)::

        redis+sentinel://[user:password@]host1[:port1][,host2[:port2],...]/master_name[/db][?options]

    - every ``host:port`` is a sentinel (port 26379 when left out; an IPv6
      address goes in brackets, ``[::1]:26379``);
    - ``master_name`` is the name the sentinels monitor; ``db`` defaults to 0;
    - ``user:password`` and the options (redis-py's URL options, typed by
      redis-py: ``socket_timeout=5``, ``ssl_ca_certs=...``) are for the
      master's connections;
    - options starting with ``sentinel_`` are for the sentinels themselves,
      without the prefix (``sentinel_password=...``, ``sentinel_socket_timeout=1``);
    - ``rediss+sentinel://`` uses TLS to the master and to the sentinels,
      which share the ``ssl_*`` options unless given ``sentinel_ssl_*`` ones.

    Returns ``{"sentinels": [(host, port), ...], "master_name": ..., **master
    kwargs, "sentinel_kwargs": {...}}`` (``sentinel_kwargs`` only when some
    option asks for it).

    Raises:
        ConfigurationError: no sentinel, no master name, a bad port or db.
    """
    shown = _without_password(url)
    scheme, _, rest = url.partition("://")
    tls = SENTINEL_SCHEMES.get(scheme.lower())
    if tls is None:
        raise ConfigurationError(f"not a redis+sentinel:// URL: {shown!r}")
    netloc, _, path_and_query = rest.partition("/")
    path, _, query = path_and_query.partition("?")
    netloc, _, query_before_path = netloc.partition("?")
    query = query or query_before_path
    userinfo, _, host_list = netloc.rpartition("@")
    sentinels = [_sentinel_address(item, shown) for item in host_list.split(",") if item]
    if not sentinels:
        raise ConfigurationError(f"Sentinel URL names no sentinel host: {shown!r}")
    master_name, _, db = (unquote(part) for part in path.strip("/").partition("/"))
    if not master_name:
        raise ConfigurationError(
            f"Sentinel URL names no master: expected .../<master_name>[/<db>] in {shown!r}"
        )
    master_options: list[tuple[str, str]] = []
    sentinel_options: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key.startswith(SENTINEL_OPTION_PREFIX):
            sentinel_options.append((key.removeprefix(SENTINEL_OPTION_PREFIX), value))
        else:
            master_options.append((key, value))
    if tls:
        given = {key for key, _ in sentinel_options}
        sentinel_options += [
            (k, v) for k, v in master_options if k.startswith("ssl") and k not in given
        ]
    master = _connection_kwargs(master_options, tls=tls, shown=shown)
    if db and "db" not in master:
        if not db.isdigit():
            raise ConfigurationError(f"Sentinel URL: db must be a number, got {db!r} in {shown!r}")
        master["db"] = int(db)
    user, has_password, password = userinfo.partition(":")
    if user:
        master["username"] = unquote(user)
    if has_password:
        master["password"] = unquote(password)
    decoded: dict[str, Any] = {"sentinels": sentinels, "master_name": master_name, **master}
    sentinel_kwargs = _connection_kwargs(sentinel_options, tls=tls, shown=shown)
    sentinel_kwargs.pop("db", None)
    if sentinel_kwargs:
        decoded["sentinel_kwargs"] = sentinel_kwargs
    return decoded


def _sentinel_address(item: str, shown: str) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` of one sentinel."""
    if item.startswith("["):
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host or (port and not port.isdigit()):
        # A password holding an unencoded "/" ends the host list early, and
        # ``item`` is then a piece of it: name it only if ``shown`` shows it.
        named = repr(item) if item in shown else "host"
        raise ConfigurationError(f"Sentinel URL: cannot read sentinel {named} in {shown!r}")
    return unquote(host), int(port) if port else DEFAULT_SENTINEL_PORT


def _connection_kwargs(options: list[tuple[str, str]], *, tls: bool, shown: str) -> dict[str, Any]:
    """redis-py connection kwargs from URL options, typed by redis-py's own URL parser."""
    if not options and not tls:
        return {}
    try:
        kwargs: dict[str, Any] = dict(parse_url("redis://localhost?" + urlencode(options)))
    except ValueError as exc:
        raise ConfigurationError(f"Sentinel URL: {exc} in {shown!r}") from exc
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if tls:
        # Sentinel pools pick their own TLS connection class from ``ssl``.
        kwargs["ssl"] = True
    return kwargs


def _without_password(url: str) -> str:
    """``url`` with every password (userinfo and ``*password=`` options) shown as ``***``.

    Works on URLs that do not parse too, since it masks them for error
    messages: every ``...password=`` value wherever it stands (also in a
    query right after the host list), then everything between the first
    ``:`` and the last ``@`` (a password may hold an unencoded ``/`` or ``@``).
    """
    scheme, _, rest = url.partition("://")
    rest = re.sub(r"(password=)[^&]*", r"\1***", rest)
    userinfo, at, after = rest.rpartition("@")
    if ":" in userinfo:
        rest = userinfo.partition(":")[0] + ":***" + at + after
    return f"{scheme}://{rest}"


def compile_capacities(
    channel_capacity: Mapping[Any, int] | None,
) -> tuple[tuple[ChannelPattern, int], ...]:
    """Globs become regular expressions; objects with ``match`` (compiled
    regexes, or the ``regex`` package's) are kept as given, as in channels_redis."""
    compiled: list[tuple[ChannelPattern, int]] = []
    for pattern, value in (channel_capacity or {}).items():
        capacity = _require_positive_int("channel_capacity value", value)
        if isinstance(pattern, str):
            compiled.append((re.compile(fnmatch.translate(pattern)), capacity))
        elif callable(getattr(pattern, "match", None)):
            compiled.append((pattern, capacity))
        else:
            raise ConfigurationError(f"channel_capacity pattern must be str or regex: {pattern!r}")
    return tuple(compiled)


def _require_positive_int(name: str, value: Any) -> int:
    """``value`` if a positive int; a float holding a whole number becomes an int.

    ``60.0`` (what ``float(os.environ[...])`` gives) is accepted, as
    channels_redis accepts it; bools, strings and fractions are refused.
    """
    number = int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
    return number


def _require_expiry(value: Any) -> float:
    """``expiry`` in seconds: as :func:`_require_positive_int`, or a fraction.

    Messages expire by the millisecond (``LayerConfig.expiry_ms``), so a
    fraction such as ``0.5`` is kept, as channels_redis keeps it; it must
    come to at least one millisecond. Keys' TTLs round it up to whole seconds.
    """
    if isinstance(value, float) and not value.is_integer():
        if not math.isfinite(value) or round(value * 1000) < 1:
            raise ConfigurationError(f"expiry must be at least 0.001 seconds, got {value!r}")
        return value
    return _require_positive_int("expiry", value)


def _require_serializer_format(value: Any) -> str:
    """A format registered in ``channels_redis.serializers.registry`` (msgpack,
    json, or one an application registered before building the layer)."""
    # The registry has no public way to look a format up without building a
    # serializer, which needs the layer's keys and expiry.
    registered = registry._registry
    if not isinstance(value, str) or value not in registered:
        raise ConfigurationError(
            "serializer_format must be one registered in channels_redis.serializers.registry "
            f"({', '.join(sorted(registered))}), got {value!r}"
        )
    return value


def build_config(  # noqa: PLR0913 - channels_redis's CONFIG keys, one argument each
    *,
    hosts: Any = None,
    prefix: str = DEFAULT_PREFIX,
    expiry: float = DEFAULT_EXPIRY_S,
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
    same_process_shortcut: bool = False,
    random_prefix_length: int | None = None,
) -> LayerConfig:
    """Validate CONFIG and return a :class:`LayerConfig`.

    ``random_prefix_length`` is accepted for channels_redis compatibility and
    ignored: stream entry IDs are already unique. Counts and seconds may be
    floats holding whole numbers (``60.0``); ``expiry`` may also be a
    fraction of a second (see :func:`_require_expiry`).

    Raises :class:`ConfigurationError` naming the offending key and value.
    """
    del random_prefix_length
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(f"prefix must be a non-empty str, got {prefix!r}")
    if isinstance(symmetric_encryption_keys, (str, bytes)):
        raise ConfigurationError("symmetric_encryption_keys must be a list of keys, not one key")
    if not isinstance(team, str) or not team:
        raise ConfigurationError(f"team must be a non-empty str, got {team!r}")
    return LayerConfig(
        hosts=decode_hosts(hosts),
        prefix=prefix,
        expiry_s=_require_expiry(expiry),
        group_expiry_s=_require_positive_int("group_expiry", group_expiry),
        capacity=_require_positive_int("capacity", capacity),
        channel_capacity=compile_capacities(channel_capacity),
        symmetric_encryption_keys=tuple(symmetric_encryption_keys or ()),
        serializer_format=_require_serializer_format(serializer_format),
        max_message_bytes=_require_positive_int("max_message_bytes", max_message_bytes),
        history_size=_require_positive_int("history_size", history_size),
        block_ms=_require_positive_int("block_ms", block_ms),
        read_count=_require_positive_int("read_count", read_count),
        team=team,
        same_process_shortcut=bool(same_process_shortcut),
    )
