"""Property-based tests: message round trip and input validation on a real layer.

Every message goes through a real :class:`RedisStreamsChannelLayer` on the
session's Redis server, for both serializer formats, with and without
encryption, and along the three delivery paths (a process-specific channel,
a normal channel, a group).

What each format carries (asserted below, and stated in docs/security.md):

- msgpack: bytes, str (valid Unicode; lone surrogates are refused with
  InvalidMessageError), ints from -2**63 to 2**64 - 1 (beyond: refused),
  every float including inf and NaN, bools, None, lists and str-keyed dicts.
  Tuples come back as lists.
- json: no bytes (refused with InvalidMessageError); str including lone
  surrogates (json escapes them); ints of any size; every float including
  inf and NaN (Python's json writes the non-standard ``Infinity``/``NaN``
  tokens and reads them back); non-str keys of nested dicts come back as
  str (``{1: "a"}`` -> ``{"1": "a"}``); tuples come back as lists.

Hypothesis profiles: ``ci`` (default, a few dozen examples per property) and
``full`` (at least 1,000 examples per property), chosen by the environment
variable ``HYPOTHESIS_PROFILE``::

    HYPOTHESIS_PROFILE=full .venv/bin/pytest tests/test_properties.py

Each property reuses one event loop and one set of layers for all its
examples (a module-scoped :class:`LoopRunner`): building a layer and its
connections per example would cost more than the round trip under test.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.redis_topologies import async_client
from streams_layer import RedisStreamsChannelLayer
from streams_layer.exceptions import (
    InvalidChannelNameError,
    InvalidMessageError,
    MessageTooLarge,
    StreamsLayerError,
)
from tests.layer_helpers import keys_under, queued_entries, receives_nothing

T = TypeVar("T")

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "full",
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
KEY = "property-test-secret"
OTHER_KEY = "another-secret"
SMALL_LIMIT = 2048
RECEIVE_S = 5.0
NAME_LIMIT = 100  # channels.layers.BaseChannelLayer.MAX_NAME_LENGTH
RESERVED_KEY = "__asgi_channel__"

CONFIGS: dict[str, dict[str, Any]] = {
    "msgpack": {"serializer_format": "msgpack"},
    "msgpack+fernet": {"serializer_format": "msgpack", "symmetric_encryption_keys": [KEY]},
    "json": {"serializer_format": "json"},
    "json+fernet": {"serializer_format": "json", "symmetric_encryption_keys": [KEY]},
}
ROUTES = ("specific", "normal", "group")


class LoopRunner:
    """One event loop, driven from synchronous hypothesis tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion on this runner's loop."""
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class Bench:
    """A layer on its own prefix with one channel of each kind, plus a raw client."""

    def __init__(self, runner: LoopRunner, url: str, **config: Any) -> None:
        self.runner = runner
        self.prefix = "p" + uuid.uuid4().hex[:10]
        self.layer = RedisStreamsChannelLayer(hosts=[url], prefix=self.prefix, **config)
        # A RedisCluster under --topology=cluster.
        self.client = cast("redis.asyncio.Redis", async_client(url))
        self.specific = runner.run(self.layer.new_channel())
        self.normal = "props.normal"
        self.group = "props-group"
        runner.run(self.layer.group_add(self.group, self.specific))

    def aclose(self) -> None:
        self.runner.run(self.layer.close())
        self.runner.run(self.client.aclose())


@pytest.fixture(scope="module")
def runner() -> Iterator[LoopRunner]:
    loop_runner = LoopRunner()
    yield loop_runner
    loop_runner.close()


@pytest.fixture(scope="module")
def benches(runner: LoopRunner, redis_url: str) -> Iterator[dict[str, Bench]]:
    built = {name: Bench(runner, redis_url, **config) for name, config in CONFIGS.items()}
    for fmt in ("msgpack", "json"):
        built[f"small-{fmt}"] = Bench(
            runner, redis_url, serializer_format=fmt, max_message_bytes=SMALL_LIMIT
        )
    yield built
    for bench in built.values():
        bench.aclose()


# -- strategies ------------------------------------------------------------------------

ints64 = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
floats = st.floats(allow_nan=True, allow_infinity=True)


@functools.cache
def scalars(fmt: str) -> st.SearchStrategy[Any]:
    """Leaf values the format carries."""
    common: list[st.SearchStrategy[Any]] = [st.none(), st.booleans(), ints64, floats, st.text()]
    if fmt == "msgpack":
        # msgpack refuses lone surrogates; everything else in str is fine.
        common[-1] = st.text(alphabet=st.characters(exclude_categories=["Cs"]))
        common.append(st.binary())
    return st.one_of(*common)


@functools.cache
def values(fmt: str) -> st.SearchStrategy[Any]:
    """Nested lists, tuples and str-keyed dicts of :func:`scalars`."""
    return st.recursive(
        scalars(fmt),
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.tuples(children, children),
            st.dictionaries(st.text(max_size=8), children, max_size=5),
        ),
        max_leaves=20,
    )


@functools.cache
def messages(fmt: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid messages: str keys (never the reserved one), a ``type``, any values."""
    keys = st.text(max_size=12).filter(lambda k: k != RESERVED_KEY)
    return st.builds(
        lambda body, kind: {**body, "type": kind},
        st.dictionaries(keys, values(fmt), max_size=6),
        st.text(min_size=1, max_size=20),
    )


def canonical(value: Any) -> Any:
    """What a value looks like after a round trip: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types (True is not 1), NaN and the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


async def round_trip(bench: Bench, route: str, message: dict[str, Any]) -> dict[str, Any]:
    layer = bench.layer
    if route == "specific":
        await layer.send(bench.specific, message)
        channel = bench.specific
    elif route == "normal":
        await layer.send(bench.normal, message)
        channel = bench.normal
    else:
        await layer.group_send(bench.group, message)
        channel = bench.specific
    received: dict[str, Any] = await asyncio.wait_for(layer.receive(channel), RECEIVE_S)
    return received


# -- round trip ------------------------------------------------------------------------


def check_round_trip(bench: Bench, route: str, message: dict[str, Any]) -> None:
    received = bench.runner.run(round_trip(bench, route, message))
    assert same(received, canonical(message)), (message, received)


@pytest.mark.parametrize("config", ["msgpack", "msgpack+fernet"])
@PROFILE
@given(data=st.data())
def test_msgpack_messages_come_back_equal(
    benches: dict[str, Bench], config: str, data: st.DataObject
) -> None:
    message = data.draw(messages("msgpack"), label="message")
    route = data.draw(st.sampled_from(ROUTES), label="route")
    check_round_trip(benches[config], route, message)


@pytest.mark.parametrize("config", ["json", "json+fernet"])
@PROFILE
@given(data=st.data())
def test_json_messages_come_back_equal(
    benches: dict[str, Bench], config: str, data: st.DataObject
) -> None:
    message = data.draw(messages("json"), label="message")
    route = data.draw(st.sampled_from(ROUTES), label="route")
    check_round_trip(benches[config], route, message)


@pytest.mark.parametrize("config", list(CONFIGS))
@PROFILE
@given(number=st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_the_whole_signed_64_bit_range_round_trips(
    benches: dict[str, Bench], config: str, number: int
) -> None:
    check_round_trip(benches[config], "specific", {"type": "n", "n": number, "neg": -number - 1})


@pytest.mark.parametrize("config", list(CONFIGS))
def test_int64_and_float_edges_round_trip(benches: dict[str, Bench], config: str) -> None:
    edge = {
        "type": "edges",
        "ints": [INT64_MIN, INT64_MAX, 0, -1, UINT64_MAX],
        "floats": [math.inf, -math.inf, math.nan, -0.0, 5e-324, 1.7976931348623157e308],
    }
    check_round_trip(benches[config], "specific", edge)


@pytest.mark.parametrize("config", ["json", "json+fernet"])
def test_json_documented_conversions(benches: dict[str, Bench], config: str) -> None:
    bench = benches[config]
    message = {"type": "x", "nested": {1: "a", 2.5: "b"}, "pair": (1, 2), "big": 2**80}
    received = bench.runner.run(round_trip(bench, "specific", message))
    assert received == {"type": "x", "nested": {"1": "a", "2.5": "b"}, "pair": [1, 2], "big": 2**80}


# -- invalid messages ------------------------------------------------------------------


class Unserializable:
    """A value neither msgpack nor json can write."""


@functools.cache
def invalid_messages(fmt: str) -> st.SearchStrategy[tuple[Any, type[StreamsLayerError]]]:
    """Messages the layer must refuse, with the error each must raise."""
    valid = messages(fmt)
    not_a_dict = st.one_of(
        st.none(), st.integers(), st.text(), st.lists(st.integers()), st.binary()
    ).map(lambda m: (m, InvalidMessageError))
    bad_key = st.builds(
        lambda m, k: ({**m, k: 1}, InvalidMessageError),
        valid,
        st.one_of(st.integers(), st.binary(min_size=1), st.just(None), st.floats()),
    )
    reserved = valid.map(lambda m: ({**m, RESERVED_KEY: "x"}, InvalidMessageError))
    bad_values = [
        st.builds(Unserializable),
        st.sets(st.integers(), min_size=1),
        st.complex_numbers(),
    ]
    if fmt == "msgpack":
        bad_values += [
            st.integers(min_value=UINT64_MAX + 1),
            st.integers(max_value=INT64_MIN - 1),
            st.text(alphabet=st.characters(categories=["Cs"]), min_size=1),
        ]
    else:
        bad_values.append(st.binary())
    unserializable = st.builds(
        lambda m, v, nest: ({**m, "bad": [v] if nest else v}, InvalidMessageError),
        valid,
        st.one_of(*bad_values),
        st.booleans(),
    )
    too_large = st.builds(
        lambda m, n: ({**m, "blob": "x" * n}, MessageTooLarge),
        valid,
        st.integers(min_value=SMALL_LIMIT, max_value=4 * SMALL_LIMIT),
    )
    return st.one_of(not_a_dict, bad_key, reserved, unserializable, too_large)


async def nothing_queued(bench: Bench) -> None:
    # No stream holds an entry and no channel has a queued count; receive()
    # may have created empty streams, and the fixture made one group membership.
    assert await queued_entries(bench.client, bench.prefix) == 0
    keys = await keys_under(bench.client, bench.prefix)
    assert not [key for key in keys if key.endswith(b":n")], keys
    members = await bench.client.zrange(f"{bench.prefix}:group:{{{bench.group}}}", 0, -1)
    assert members == [bench.specific.encode()]


async def refused(bench: Bench, route: str, message: Any, error: type[Exception]) -> None:
    layer = bench.layer
    if route == "specific":
        attempt = layer.send(bench.specific, message)
    elif route == "normal":
        attempt = layer.send(bench.normal, message)
    else:
        attempt = layer.group_send(bench.group, message)
    with pytest.raises(error) as caught:
        await attempt
    assert isinstance(caught.value, StreamsLayerError)
    base = ValueError if error is MessageTooLarge else TypeError
    assert isinstance(caught.value, base)
    await nothing_queued(bench)


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@PROFILE
@given(data=st.data())
def test_invalid_messages_raise_typed_errors_and_queue_nothing(
    benches: dict[str, Bench], fmt: str, data: st.DataObject
) -> None:
    message, error = data.draw(invalid_messages(fmt), label="invalid")
    route = data.draw(st.sampled_from(ROUTES), label="route")
    bench = benches[f"small-{fmt}"]
    bench.runner.run(refused(bench, route, message, error))


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_after_refusals_the_channels_are_empty(benches: dict[str, Bench], fmt: str) -> None:
    bench = benches[f"small-{fmt}"]
    for channel in (bench.specific, bench.normal):
        assert bench.runner.run(receives_nothing(bench.layer, channel, 0.3))
    bench.runner.run(nothing_queued(bench))


# -- invalid names ---------------------------------------------------------------------

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
# Characters invalid in every part of a channel or group name, wherever inserted.
FORBIDDEN = " ,/:;{}*?#@+'\"<>[]()%&$=|\\\t\x00\r~^`"


def valid_names(bang: bool) -> st.SearchStrategy[str]:
    head = st.text(alphabet=NAME_CHARS, min_size=1, max_size=40)
    if not bang:
        return head
    tail = st.text(alphabet=NAME_CHARS, max_size=20)
    return st.builds(lambda h, t: f"{h}!{t}", head, tail)


def invalid_names(*, group: bool) -> st.SearchStrategy[Any]:
    """Names that are not valid channel (or, with ``group``, group) names."""
    with_forbidden = st.builds(
        lambda name, char, where: (
            name[: where % (len(name) + 1)] + char + name[where % (len(name) + 1) :]
        ),
        valid_names(bang=False) if group else st.one_of(valid_names(False), valid_names(True)),
        st.sampled_from(FORBIDDEN + ("!" if group else "")),
        st.integers(min_value=0, max_value=200),
    )
    too_long = st.text(alphabet=NAME_CHARS, min_size=NAME_LIMIT, max_size=NAME_LIMIT + 50)
    non_ascii_head = st.builds(
        lambda name, char: char + name,
        valid_names(False),
        # Unicode digits (Nd) would match the name pattern's \d.
        st.characters(min_codepoint=0x80, exclude_categories=["Cs", "Nd"]),
    )
    not_str = st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text(), max_size=2))
    return st.one_of(st.just(""), with_forbidden, too_long, non_ascii_head, not_str)


async def refuses_names(bench: Bench, channel: Any, group: Any) -> None:
    layer = bench.layer
    message = {"type": "x"}
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: layer.send(channel, message),
        lambda: layer.receive(channel),
        lambda: layer.group_add(bench.group, channel),
        lambda: layer.group_discard(bench.group, channel),
        lambda: layer.group_add(group, bench.specific),
        lambda: layer.group_discard(group, bench.specific),
        lambda: layer.group_send(group, message),
    ]
    for call in calls:
        with pytest.raises(InvalidChannelNameError) as caught:
            await call()
        assert isinstance(caught.value, StreamsLayerError)
        assert isinstance(caught.value, TypeError)
    await nothing_queued(bench)


@PROFILE
@given(channel=invalid_names(group=False), group=invalid_names(group=True))
def test_invalid_names_raise_typed_errors_and_touch_nothing(
    benches: dict[str, Bench], channel: Any, group: Any
) -> None:
    bench = benches["small-msgpack"]
    bench.runner.run(refuses_names(bench, channel, group))


# -- known gap -------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [{1: "a"}, {None: "a"}])
def test_msgpack_nested_non_str_keys_are_refused_or_delivered(
    benches: dict[str, Bench], nested: dict[Any, str]
) -> None:
    # msgpack writes an int (or array, or nil) map key, but unpackb's default
    # strict_map_key=True refuses it on the way back, so send() must refuse it
    # rather than accept a message the reader would drop.
    bench = benches["msgpack"]
    message = {"type": "x", "nested": nested}

    async def attempt() -> dict[str, Any] | None:
        try:
            await bench.layer.send(bench.specific, message)
        except InvalidMessageError:
            return None
        try:
            received: dict[str, Any] = await asyncio.wait_for(
                bench.layer.receive(bench.specific), 1
            )
        except TimeoutError:
            pytest.fail("send() accepted the message but receive() never delivered it")
        return received

    received = bench.runner.run(attempt())
    assert received is None
