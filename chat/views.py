"""Views of the chat: the index page and a room page."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from chat.rooms import is_valid_room_name


def index(request: HttpRequest) -> HttpResponse:
    """A page that explains how to open a room."""
    return render(request, "chat/index.html")


def room(request: HttpRequest, room: str) -> HttpResponse:
    """The page of one room; any path that is not a valid room name is a 404.

    Raises:
        Http404: ``room`` is not a valid room name.
    """
    if not is_valid_room_name(room):
        raise Http404("no such room")
    return render(request, "chat/room.html", {"room": room})
