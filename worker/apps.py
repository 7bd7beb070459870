"""App configuration of the statistics worker."""

from __future__ import annotations

from django.apps import AppConfig


class WorkerConfig(AppConfig):
    """Request statistics fed through the ``statistic`` channel."""

    name = "worker"
    verbose_name = "Request statistics"
    default_auto_field = "django.db.models.BigAutoField"
