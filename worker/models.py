"""Aggregated request statistics."""

from __future__ import annotations

from django.db import models

USER_AGENT_MAX_LENGTH = 300
CLIENT_IP_MAX_LENGTH = 64
CHANNEL_MAX_LENGTH = 100  # Channels' limit on a channel name
ENTRY_ID_MAX_LENGTH = 41  # "<ms>-<seq>": two unsigned 64-bit integers


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


class CountedMessage(models.Model):
    """A message already counted: its channel and stream entry ID.

    Written in the transaction that counts the message. A worker that dies
    after that commit and before its acknowledgement reaches Redis leaves the
    message pending, and a teammate handles it again: this row makes the
    second count a no-op. Rows older than the channel's expiry can go (the
    stream no longer holds their entries; see ``forget_counted``).
    """

    channel = models.CharField(max_length=CHANNEL_MAX_LENGTH)
    entry_id = models.CharField(max_length=ENTRY_ID_MAX_LENGTH)
    counted_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "entry_id"], name="unique_counted_message")
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.entry_id} at {self.counted_at:%Y-%m-%d %H:%M:%S}"
