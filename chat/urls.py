"""HTTP routes of the chat: an index and one page per room."""

from __future__ import annotations

from django.urls import path, re_path

from chat import views
from chat.rooms import ROOM_NAME_PATTERN

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    re_path(rf"^(?P<room>{ROOM_NAME_PATTERN})/$", views.room, name="room"),
]
