"""Websocket routes of the chat: ``ws/<room>/``."""

from __future__ import annotations

from django.urls import re_path

from chat.consumers import ChatConsumer
from chat.rooms import ROOM_NAME_PATTERN

websocket_urlpatterns = [
    re_path(rf"^ws/(?P<room>{ROOM_NAME_PATTERN})/$", ChatConsumer.as_asgi()),
]
