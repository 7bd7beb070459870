"""The layers under test, by short name, and how a process builds one.

Every process builds its own instance from the same :class:`LayerSpec`, so
all processes of a measurement share one CONFIG and one prefix.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

RAW = "raw"
REFERENCE = "core"
DEFAULT_LAYERS = ("streams", "core", "pubsub", RAW)
PREFIX = "bench"


@dataclass(frozen=True)
class LayerSpec:
    """One layer under test.

    ``strict`` marks layers that promise neither loss nor duplication in the
    benchmark's conditions; ``--smoke`` fails when they show either.
    """

    name: str
    path: str
    config: dict[str, Any] = field(default_factory=dict)
    strict: bool = False

    @property
    def is_raw(self) -> bool:
        """The raw redis-py ceiling rather than a channel layer."""
        return self.name == RAW


KNOWN: dict[str, LayerSpec] = {
    "streams": LayerSpec("streams", "streams_layer.RedisStreamsChannelLayer", strict=True),
    "core": LayerSpec("core", "channels_redis.core.RedisChannelLayer"),
    "pubsub": LayerSpec("pubsub", "channels_redis.pubsub.RedisPubSubChannelLayer"),
    RAW: LayerSpec(RAW, "", strict=True),
}


def parse_layers(text: str) -> list[LayerSpec]:
    """Parse ``--layers``: known short names, or ``name=module.Class``.

    A custom entry may carry JSON-free CONFIG overrides as ``key:value``
    pairs after ``@``, e.g. ``nolocal=streams_layer.RedisStreamsChannelLayer@local_shortcut:false``.
    """
    specs: list[LayerSpec] = []
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        if "=" not in item:
            if item not in KNOWN:
                msg = f"unknown layer {item!r}; known: {', '.join(KNOWN)} or name=module.Class"
                raise ValueError(msg)
            specs.append(KNOWN[item])
            continue
        name, _, rest = item.partition("=")
        path, _, options = rest.partition("@")
        config: dict[str, Any] = {}
        for option in filter(None, options.split(";")):
            key, _, value = option.partition(":")
            config[key] = _literal(value)
        strict = path.startswith("streams_layer")
        specs.append(LayerSpec(name, path, config, strict=strict))
    return specs


def _literal(value: str) -> Any:
    lowered = value.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def import_class(path: str) -> Any:
    """Import ``module.Class`` or ``module:Class``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def make_layer(spec: LayerSpec, url: str, **overrides: Any) -> Any:
    """Build the layer of ``spec`` on ``url`` with the bench prefix."""
    config: dict[str, Any] = {"hosts": [url], "prefix": PREFIX}
    config.update(spec.config)
    config.update(overrides)
    return import_class(spec.path)(**config)


async def close_layer(layer: Any) -> None:
    """Close every connection of ``layer``, whatever its kind."""
    for name in ("close", "close_pools"):
        try:
            closer = getattr(layer, name)
        except AttributeError:
            continue
        await closer()
        return
    # RedisPubSubChannelLayer: flush() unsubscribes and closes its connections.
    await layer.flush()
