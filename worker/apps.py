"""App configuration of the statistics worker."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed

# Settings the statistics sender is built from.
SENDER_SETTINGS = frozenset(
    {"CHANNEL_LAYERS", "STATISTIC_CHANNEL", "STATISTIC_CHANNEL_LAYER", "STATISTIC_SEND_TIMEOUT"}
)


def _reset_sender_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting in SENDER_SETTINGS:
        from worker.middleware import reset_sender  # noqa: PLC0415 - models not loaded at import

        reset_sender()


class WorkerConfig(AppConfig):
    """Request statistics fed through the ``statistic`` channel."""

    name = "worker"
    verbose_name = "Request statistics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Rebuild the statistics sender when its settings change (tests override them)."""
        setting_changed.connect(_reset_sender_on_change, dispatch_uid="worker-reset-sender")
