"""Routes of the statistics pages."""

from __future__ import annotations

from django.urls import path

from worker import views

app_name = "worker"

urlpatterns = [
    path("stats/", views.stats_page, name="stats"),
    path("stats.json", views.stats_json, name="stats-json"),
]
