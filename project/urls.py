"""URL configuration: statistics first, then the chat rooms (any other path)."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("worker.urls")),
    path("", include("chat.urls")),
]
