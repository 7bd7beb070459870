"""``manage.py streams_status [--watch] [--json]``: what is queued under the layer's prefix."""

from __future__ import annotations

import asyncio
import json
from argparse import ArgumentParser
from typing import Any

from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError

from streams_layer import RedisStreamsChannelLayer, StreamsLayerError

WATCH_INTERVAL_S = 1.0
CLEAR_SCREEN = "\x1b[2J\x1b[H"


class Command(BaseCommand):
    """Prints every stream of the default channel layer: kind, length, age, teams, consumers."""

    help = (
        "Show every key under the channel layer's prefix: kind, length, age of the oldest "
        "entry, teams (pending, lag), consumers (idle) and dead letters."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Declare --watch and --json."""
        parser.add_argument(
            "--watch", action="store_true", help="refresh every second until Ctrl-C"
        )
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the status once, or again every second with --watch."""
        layer = get_channel_layer()
        if not isinstance(layer, RedisStreamsChannelLayer):
            msg = (
                f"the default channel layer is {type(layer).__name__}, not RedisStreamsChannelLayer"
            )
            raise CommandError(msg)
        try:
            asyncio.run(
                self._run(layer, watch=bool(options["watch"]), as_json=bool(options["json"]))
            )
        except KeyboardInterrupt:
            return
        except StreamsLayerError as exc:
            raise CommandError(f"cannot read the status: {exc}") from exc

    async def _run(self, layer: RedisStreamsChannelLayer, *, watch: bool, as_json: bool) -> None:
        try:
            while True:
                status = await layer.status()
                if as_json:
                    self.stdout.write(json.dumps(status.as_dict()))
                else:
                    if watch:
                        self.stdout.write(CLEAR_SCREEN, ending="")
                    self.stdout.write(status.render(), ending="")
                self.stdout.flush()
                if not watch:
                    return
                await asyncio.sleep(WATCH_INTERVAL_S)
        finally:
            await layer.close()
