"""streams_layer: a Django Channels channel layer on Redis Streams."""

from __future__ import annotations

from .exceptions import (
    ChannelFull,
    ConfigurationError,
    InvalidChannelNameError,
    InvalidMessageError,
    LayerConnectionError,
    MalformedEntryError,
    MessageTooLarge,
    RedisCommandError,
    StreamsLayerError,
)
from .history import GroupHistory
from .layer import RedisStreamsChannelLayer

__version__ = "0.1.0"

__all__ = [
    "ChannelFull",
    "ConfigurationError",
    "GroupHistory",
    "InvalidChannelNameError",
    "InvalidMessageError",
    "LayerConnectionError",
    "MalformedEntryError",
    "MessageTooLarge",
    "RedisCommandError",
    "RedisStreamsChannelLayer",
    "StreamsLayerError",
    "__version__",
]
