"""Lua scripts of the layer, loaded once and called by SHA.

Each ``<name>.lua`` beside this module is one script; ``common.lua`` is
prepended to all of them. ``EXPIRE_BATCH``, ``INBOX_BACKLOG``, ``UNREAD_SCAN``,
``GROUP_UNREAD_FACTOR``, ``GROUP_ADDED_FIELD``, ``GROUP_READ_FIELD`` and
``KEY_TTL_SLACK_MS`` are replaced by their values from
:mod:`streams_layer.config` so each lives in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from ..config import (
    EXPIRE_BATCH,
    GROUP_ADDED_FIELD,
    GROUP_READ_FIELD,
    GROUP_UNREAD_FACTOR,
    INBOX_BACKLOG,
    KEY_TTL_SLACK_MS,
    UNREAD_SCAN,
)


@dataclass(frozen=True)
class Script:
    """One Lua script: its name, source and SHA1."""

    name: str
    source: str
    sha: str


def _load(name: str, common: str) -> Script:
    body = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    source = (common + "\n" + body).replace("EXPIRE_BATCH", str(EXPIRE_BATCH))
    source = source.replace("INBOX_BACKLOG", str(INBOX_BACKLOG))
    source = source.replace("UNREAD_SCAN", str(UNREAD_SCAN))
    source = source.replace("KEY_TTL_SLACK_MS", str(KEY_TTL_SLACK_MS))
    source = source.replace("GROUP_UNREAD_FACTOR", str(GROUP_UNREAD_FACTOR))
    source = source.replace("GROUP_ADDED_FIELD", f"'{GROUP_ADDED_FIELD}'")
    source = source.replace("GROUP_READ_FIELD", f"'{GROUP_READ_FIELD}'")
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 - Redis names scripts by SHA1


_COMMON = resources.files(__package__).joinpath("common.lua").read_text(encoding="utf-8")

INBOX_SEND = _load("inbox_send", _COMMON)
INBOX_CONSUMED = _load("inbox_consumed", _COMMON)
INBOX_IDLE = _load("inbox_idle", _COMMON)
INBOX_DELIVERED = _load("inbox_delivered", _COMMON)
STREAM_OPEN = _load("stream_open", _COMMON)
CHAN_SEND = _load("chan_send", _COMMON)
CHAN_ACK = _load("chan_ack", _COMMON)
GROUP_ADD = _load("group_add", _COMMON)
GROUP_DISCARD = _load("group_discard", _COMMON)
HISTORY_ADD = _load("history_add", _COMMON)
# Team scripts (streams_layer.team) share team_common.lua as well.
_TEAM_COMMON = (
    _COMMON
    + "\n"
    + resources.files(__package__).joinpath("team_common.lua").read_text(encoding="utf-8")
)
TEAM_CLAIM = _load("team_claim", _TEAM_COMMON)
TEAM_DEAD = _load("team_dead", _TEAM_COMMON)
TEAM_REPLAY = _load("team_replay", _COMMON)
TEAM_LEAVE = _load("team_leave", _COMMON)

BY_SHA: dict[str, Script] = {
    s.sha: s
    for s in (
        INBOX_SEND,
        INBOX_CONSUMED,
        INBOX_IDLE,
        INBOX_DELIVERED,
        STREAM_OPEN,
        CHAN_SEND,
        CHAN_ACK,
        GROUP_ADD,
        GROUP_DISCARD,
        HISTORY_ADD,
        TEAM_CLAIM,
        TEAM_DEAD,
        TEAM_REPLAY,
        TEAM_LEAVE,
    )
}

# Sent ahead of the first batch on every new batcher connection: a Redis that
# is new, restarted, or a new master after a failover has no scripts cached,
# and EVALSHA's NOSCRIPT retry would run the refused scripts after the
# commands that followed them in the batch (or after a batch that another
# client's EVAL made succeed in between).
LOAD_ALL: tuple[tuple[str, str, str], ...] = tuple(
    ("SCRIPT", "LOAD", script.source) for script in BY_SHA.values()
)
