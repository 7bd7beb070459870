"""Exceptions raised by streams_layer.

Every exception derives from :class:`StreamsLayerError`. Where Python or
Channels already has a name for the problem, the exception derives from that
too, so existing ``except`` clauses keep working::

    StreamsLayerError
     ├── ChannelFull              (also channels.exceptions.ChannelFull)
     ├── InvalidMessageError      (also TypeError)
     ├── InvalidChannelNameError  (also TypeError)
     ├── MessageTooLarge          (also ValueError)
     ├── ConfigurationError       (also ValueError)
     ├── MalformedEntryError      (also ValueError)
     ├── RedisCommandError        Redis refused a command (ACL, wrong key type, …)
     └── LayerConnectionError     (also ConnectionError)
"""

from __future__ import annotations

import channels.exceptions


class StreamsLayerError(Exception):
    """Root of every exception raised by streams_layer."""


class ChannelFull(StreamsLayerError, channels.exceptions.ChannelFull):
    """``send`` found ``capacity`` messages already queued for the channel."""


class InvalidMessageError(StreamsLayerError, TypeError):
    """The message is not a dict, uses a reserved key, or cannot be serialized."""


class InvalidChannelNameError(StreamsLayerError, TypeError):
    """A channel or group name is not a valid Channels name, or not ours to read."""


class MessageTooLarge(StreamsLayerError, ValueError):
    """The serialized message is larger than ``max_message_bytes``."""


class ConfigurationError(StreamsLayerError, ValueError):
    """A CONFIG value has the wrong type or an impossible value."""


class MalformedEntryError(StreamsLayerError, ValueError):
    """A stream entry that the layer did not write, or cannot decode."""


class LayerConnectionError(StreamsLayerError, ConnectionError):
    """Redis could not be reached while an operation was in flight."""


class RedisCommandError(StreamsLayerError):
    """Redis refused a command: missing ACL permission, a key of the wrong type, …"""
