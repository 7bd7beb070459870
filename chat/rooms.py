"""Room names and the Channels group that carries each room."""

from __future__ import annotations

import re

# Letters, digits, "-", "_" and "." only: safe in a URL path, in HTML and as
# part of a Channels group name (which allows [A-Za-z0-9_.-], under 100 chars).
ROOM_NAME_PATTERN = r"[A-Za-z0-9._-]{1,80}"
_ROOM_NAME_RE = re.compile(rf"\A{ROOM_NAME_PATTERN}\Z")
GROUP_PREFIX = "chat."


def is_valid_room_name(name: str) -> bool:
    """Whether ``name`` is an acceptable room name."""
    return _ROOM_NAME_RE.match(name) is not None


def group_name(room: str) -> str:
    """The Channels group of ``room``.

    Raises:
        ValueError: ``room`` is not a valid room name.
    """
    if not is_valid_room_name(room):
        msg = f"invalid room name: {room!r}"
        raise ValueError(msg)
    return GROUP_PREFIX + room
