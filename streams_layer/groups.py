"""Group members as ``group_send`` sees them, kept between sends while unchanged.

A group is a sorted set of channel names scored by the server time (s) of
their last ``group_add``; members older than ``group_expiry`` have lapsed.
Every change of the set (``group_add``, ``group_discard``) also gives the
group's version key a new value in the same script (``bump_version`` in
common.lua). ``group_send`` to a group of GROUP_CACHE_MIN_MEMBERS or more
reads only that version (a GET) and, while it is the one read with the
members, reuses them and the fan-out plan made from them: for a thousand
members the ZRANGE reply, its decoding and the sorting of the members by
inbox were most of the sending process's time per ``group_send``. Kept
members lapse by their kept scores, as ZRANGE BYSCORE would leave them out.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import GROUP_CACHE_MEMBERS, GROUP_CACHE_MIN_MEMBERS, GROUP_CACHE_SIZE
from .keys import client_of, is_specific


@dataclass(frozen=True)
class InboxBatch:
    """The members of one group that live in one inbox: one send script."""

    client: str
    channels: str  # comma-joined, the form inbox_send.lua takes
    capacities: str  # one number, or one per channel (comma-joined)
    size: int


@dataclass(frozen=True)
class FanOutPlan:
    """Where one group message goes: normal channels one by one, inboxes in batches."""

    normal: tuple[str, ...]
    inboxes: tuple[InboxBatch, ...]

    @property
    def size(self) -> int:
        """The number of members."""
        return len(self.normal) + sum(batch.size for batch in self.inboxes)


def make_plan(members: Sequence[str], capacities: Callable[[list[str]], str]) -> FanOutPlan:
    """Sort ``members`` into normal channels and per-inbox batches."""
    normal: list[str] = []
    by_inbox: defaultdict[str, list[str]] = defaultdict(list)
    for channel in members:
        if is_specific(channel):
            by_inbox[client_of(channel)].append(channel)
        else:
            normal.append(channel)
    inboxes = tuple(
        InboxBatch(client, ",".join(channels), capacities(channels), len(channels))
        for client, channels in by_inbox.items()
    )
    return FanOutPlan(tuple(normal), inboxes)


def parse_members(raw: Any) -> tuple[list[str], list[float]]:
    """Members and scores of a ``ZRANGE ... WITHSCORES`` reply, in its order.

    Takes the flat RESP2 form (member, score, member, score, ...) and pairs
    (RESP3, or redis-py's parsed form).
    """
    items = list(raw or [])
    if items and isinstance(items[0], list | tuple):
        pairs = [(member, score) for member, score in items]
    else:
        pairs = list(zip(items[::2], items[1::2], strict=True))
    members = [m.decode() if isinstance(m, bytes) else str(m) for m, _ in pairs]
    scores = [float(score) for _, score in pairs]
    return members, scores


class _Kept:
    """One group's members as last read, with the plan for its live ones."""

    def __init__(self, version: bytes, members: list[str], scores: list[float]) -> None:
        self.version = version
        self.members = members
        self.scores = scores
        # (index of the first live member, plan for the members from there):
        # one attribute, so that loops in other threads never see a mix.
        self.live: tuple[int, FanOutPlan] | None = None

    def plan_since(self, since: float, capacities: Callable[[list[str]], str]) -> FanOutPlan:
        """The plan for the members added at ``since`` or later."""
        start = bisect.bisect_left(self.scores, since)
        live = self.live
        if live is None or live[0] != start:
            live = self.live = (start, make_plan(self.members[start:], capacities))
        return live[1]


class GroupMembers:
    """The large groups one layer instance has sent to, with their versions.

    Bounded: at most GROUP_CACHE_SIZE groups and GROUP_CACHE_MEMBERS members
    over all of them; past either bound it forgets every group (each is read
    again at its next send).
    """

    def __init__(self, capacities: Callable[[list[str]], str]) -> None:
        self._capacities = capacities
        self._kept: dict[str, _Kept] = {}
        self._members = 0  # over every kept group

    def is_kept(self, group: str) -> bool:
        """Whether reading the version alone may do for ``group``."""
        return group in self._kept

    def plan(self, group: str, version: Any, since: float) -> FanOutPlan | None:
        """The kept plan if ``version`` is still the group's version, else None."""
        kept = self._kept.get(group)
        if kept is None or version is None or version != kept.version:
            return None
        return kept.plan_since(since, self._capacities)

    def store(self, group: str, version: Any, raw_members: Any, since: float) -> FanOutPlan:
        """Members just read with ``version``: keep them if the group is large; their plan."""
        members, scores = parse_members(raw_members)
        kept = _Kept(version, members, scores)
        plan = kept.plan_since(since, self._capacities)
        old = self._kept.pop(group, None)
        if old is not None:
            self._members -= len(old.members)
        if version is None or not GROUP_CACHE_MIN_MEMBERS <= len(members) <= GROUP_CACHE_MEMBERS:
            return plan
        if (
            len(self._kept) >= GROUP_CACHE_SIZE
            or self._members + len(members) > GROUP_CACHE_MEMBERS
        ):
            self.clear()
        self._kept[group] = kept
        self._members += len(members)
        return plan

    def clear(self) -> None:
        """Forget every group (after ``flush``)."""
        self._kept.clear()
        self._members = 0
