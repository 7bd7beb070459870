"""The statistics pages: ``/stats/`` (table and charts) and ``/stats.json``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from worker.charts import line_chart
from worker.stats import summary


def stats_json(request: HttpRequest) -> JsonResponse:
    """The aggregated request counts as JSON."""
    return JsonResponse(summary())


def stats_page(request: HttpRequest) -> HttpResponse:
    """The aggregated request counts as tables and two charts."""
    figures = summary()
    timeline = figures["timeline"]
    charts = [
        line_chart(
            "Requests per minute by user agent", timeline["minutes"], timeline["by_user_agent"]
        ),
        line_chart("Requests per minute by IP", timeline["minutes"], timeline["by_ip"]),
    ]
    return render(request, "worker/stats.html", {"figures": figures, "charts": charts})
