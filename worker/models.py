"""Aggregated request statistics."""

from __future__ import annotations

from django.db import models

USER_AGENT_MAX_LENGTH = 300
CLIENT_IP_MAX_LENGTH = 64


class RequestStat(models.Model):
    """The number of requests from one user agent and IP address in one minute."""

    minute = models.DateTimeField(help_text="Start of the minute (UTC).")
    user_agent = models.CharField(max_length=USER_AGENT_MAX_LENGTH, blank=True)
    client_ip = models.CharField(max_length=CLIENT_IP_MAX_LENGTH, blank=True)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "user_agent", "client_ip"], name="unique_stat_row"
            )
        ]
        indexes = [models.Index(fields=["minute"])]
        ordering = ["minute", "user_agent", "client_ip"]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.client_ip} {self.user_agent!r}: {self.count}"
