"""``manage.py runworker_statistic``: count the ``statistic`` channel into the database."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from argparse import ArgumentParser
from typing import Any

from channels.layers import BaseChannelLayer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from worker.consuming import TeamSpec, WorkerCounters, forget_counted_regularly, run_team
from worker.progress import PendingProbe, RateMeter
from worker.sender import DEFAULT_CHANNEL, DEFAULT_CHANNEL_LAYER

DEFAULT_TEAM = "statistic"
DEFAULT_CONSUMERS = 2
DEFAULT_PROGRESS_INTERVAL_S = 2.0


class Command(BaseCommand):
    """Runs a team of consumers on the ``statistic`` channel until Ctrl-C or SIGTERM."""

    help = "Consume request statistics from the channel layer and count them in the database."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Declare --team, --consumers, --channel and --progress-interval."""
        parser.add_argument("--team", default=DEFAULT_TEAM, help="consumer team (group) name")
        parser.add_argument(
            "--consumers", type=int, default=DEFAULT_CONSUMERS, help="consumers in this process"
        )
        parser.add_argument(
            "--channel",
            default=getattr(settings, "STATISTIC_CHANNEL", DEFAULT_CHANNEL),
            help="channel to consume",
        )
        parser.add_argument(
            "--progress-interval",
            type=float,
            default=DEFAULT_PROGRESS_INTERVAL_S,
            help="seconds between progress lines (0 turns them off)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Validate the options and run the team until stopped."""
        consumers = int(options["consumers"])
        if consumers < 1:
            msg = f"--consumers must be at least 1, got {consumers}"
            raise CommandError(msg)
        team = str(options["team"])
        channel = str(options["channel"])
        if not team or not channel:
            msg = "--team and --channel must not be empty"
            raise CommandError(msg)
        asyncio.run(
            self._run(
                channel=channel,
                team=team,
                consumers=consumers,
                progress_interval_s=float(options["progress_interval"]),
            )
        )

    def _layer_config(self) -> tuple[str, dict[str, Any]]:
        layers: dict[str, Any] = getattr(settings, "CHANNEL_LAYERS", {})
        alias = getattr(settings, "STATISTIC_CHANNEL_LAYER", DEFAULT_CHANNEL_LAYER)
        try:
            entry: dict[str, Any] = layers[alias]
        except (AttributeError, KeyError, TypeError) as exc:
            msg = f"settings.CHANNEL_LAYERS has no {alias!r} layer (STATISTIC_CHANNEL_LAYER)"
            raise CommandError(msg) from exc
        config: dict[str, Any] = dict(entry.get("CONFIG", {}))
        return str(entry["BACKEND"]), config

    async def _run(
        self, *, channel: str, team: str, consumers: int, progress_interval_s: float
    ) -> None:
        backend, config = self._layer_config()
        layer: BaseChannelLayer = import_string(backend)(**config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        counters = WorkerCounters()
        probe = PendingProbe(config, channel, team)
        self.stdout.write(
            f"runworker_statistic: {consumers} consumer(s) in team {team!r} on channel {channel!r}"
        )
        self.stdout.flush()
        reporter = asyncio.create_task(self._report(counters, probe, stop, progress_interval_s))
        forgetter = asyncio.create_task(
            forget_counted_regularly(expiry_s=float(getattr(layer, "expiry", 0)), stop=stop)
        )
        try:
            spec = TeamSpec(channel=channel, team=team, consumers=consumers)
            await run_team(layer, spec, stop=stop, counters=counters)
        finally:
            stop.set()
            await reporter
            await forgetter
            await probe.close()
            close = getattr(layer, "close", None)
            if close is not None:
                await close()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        self.stdout.write(
            f"stopped: processed={counters.processed} invalid={counters.invalid} "
            f"repeated={counters.repeated} per consumer={counters.per_consumer}"
        )
        self.stdout.flush()

    async def _report(
        self,
        counters: WorkerCounters,
        probe: PendingProbe,
        stop: asyncio.Event,
        interval_s: float,
    ) -> None:
        if interval_s <= 0:
            await stop.wait()
            return
        meter = RateMeter()
        overwrite = sys.stdout.isatty() and self.stdout._out is sys.stdout
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            pending = await probe.pending()
            line = (
                f"{meter.rate(counters.processed):8.1f} msg/s  processed={counters.processed}  "
                f"pending={'?' if pending is None else pending}"
            )
            self.stdout.write(
                ("\r" + line) if overwrite else line, ending="" if overwrite else "\n"
            )
            self.stdout.flush()
        if overwrite:
            self.stdout.write("")
