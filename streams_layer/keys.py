"""The only place Redis key names are built.

Every key is ``<prefix>:<kind>:{<name>}``: the braces make ``<name>`` a Redis
Cluster hash tag, so a stream and its side keys share one slot and every
script touches keys of one slot only.
"""

from __future__ import annotations

from dataclasses import dataclass

from .exceptions import InvalidChannelNameError

INBOX = "inbox"
CHANNEL = "chan"
GROUP = "group"
HISTORY = "history"
DEAD = "dead"
KINDS = (INBOX, CHANNEL, GROUP, HISTORY, DEAD)
COUNTS_SUFFIX = ":n"
TRIMMED_SUFFIX = ":trimmed"
VERSION_SUFFIX = ":v"
SUFFIXES = ("", COUNTS_SUFFIX, TRIMMED_SUFFIX, VERSION_SUFFIX)


def client_of(channel: str) -> str:
    """The inbox owner of a process-specific channel ``<anything>.<client>!<local>``."""
    bang = channel.find("!")
    if bang < 0:
        raise InvalidChannelNameError(f"{channel!r} is not a process-specific channel")
    return channel[:bang].rsplit(".", 1)[-1]


def is_specific(channel: str) -> bool:
    """True for process-specific channel names (they contain ``!``)."""
    return "!" in channel


@dataclass(frozen=True)
class KeySpace:
    """Builds key names under one prefix."""

    prefix: str

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{{{name}}}"

    def inbox(self, client: str) -> str:
        """Stream holding every process-specific channel of ``client``."""
        return self._key(INBOX, client)

    def inbox_counts(self, client: str) -> str:
        """Hash: channel -> messages queued for it (Redis and local buffers)."""
        return self._key(INBOX, client) + COUNTS_SUFFIX

    def channel(self, name: str) -> str:
        """Stream of a normal channel, read through consumer groups (teams)."""
        return self._key(CHANNEL, name)

    def group(self, name: str) -> str:
        """Sorted set of a group's members, scored by time of last group_add."""
        return self._key(GROUP, name)

    def group_version(self, name: str) -> str:
        """String: changes with every change of a group's members (see streams_layer.groups)."""
        return self._key(GROUP, name) + VERSION_SUFFIX

    def history(self, name: str) -> str:
        """Bounded stream of a group's recorded messages."""
        return self._key(HISTORY, name)

    def history_trimmed(self, name: str) -> str:
        """String: ID of the newest entry trimmed from a group's history."""
        return self._key(HISTORY, name) + TRIMMED_SUFFIX

    def dead(self, name: str) -> str:
        """Dead-letter stream of a normal channel's teams."""
        return self._key(DEAD, name)

    def destination(self, channel: str) -> str:
        """The stream a message for ``channel`` is written to."""
        if is_specific(channel):
            return self.inbox(client_of(channel))
        return self.channel(channel)

    def hash_tag(self, channel: str) -> str:
        """The hash tag of the stream holding ``channel``: used for shard routing."""
        return client_of(channel) if is_specific(channel) else channel

    @property
    def match_all(self) -> str:
        """SCAN pattern for every key of this prefix (glob characters escaped)."""
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix)
        return escaped + ":*"

    def parse(self, key: str) -> tuple[str, str] | None:
        """``(kind, name)`` of a key built here, or None for a foreign key.

        :attr:`match_all` also matches the keys of a longer prefix that starts
        with this one and a colon (``asgi`` and ``asgi:v2``); those are foreign
        here and parse as None.
        """
        head = self.prefix + ":"
        if not key.startswith(head):
            return None
        kind, sep, rest = key[len(head) :].partition(":")
        if not sep or kind not in KINDS or not rest.startswith("{"):
            return None
        close = rest.find("}")
        if close < 0 or rest[close + 1 :] not in SUFFIXES:
            return None
        return kind, rest[1:close]
