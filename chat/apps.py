"""App configuration of the chat."""

from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """The websocket chat."""

    name = "chat"
    verbose_name = "Chat"
