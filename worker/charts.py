"""Line charts as inline SVG, drawn on the server (no script, no CDN).

The template writes the SVG elements; this module only computes coordinates,
so every label passes through Django's autoescaping.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 720
HEIGHT = 220
MARGIN_LEFT = 40
MARGIN_RIGHT = 10
MARGIN_TOP = 10
MARGIN_BOTTOM = 24
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


@dataclass(frozen=True, slots=True)
class Line:
    """One series: its label, colour and SVG ``points`` attribute."""

    label: str
    colour: str
    points: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything the template needs to draw one chart."""

    title: str
    width: int
    height: int
    lines: list[Line]
    y_max: int
    x_first: str
    x_last: str
    plot_left: int
    plot_bottom: int
    plot_right: int
    plot_top: int


def line_chart(title: str, labels: list[str], series: dict[str, list[int]]) -> Chart:
    """Lay out ``series`` (name -> one value per label) as polylines on a common scale."""
    y_max = max([1, *(max(values, default=0) for values in series.values())])
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    steps = max(1, len(labels) - 1)
    lines = []
    for position, (name, values) in enumerate(series.items()):
        points = " ".join(
            f"{MARGIN_LEFT + plot_width * index / steps:.1f},"
            f"{MARGIN_TOP + plot_height * (1 - value / y_max):.1f}"
            for index, value in enumerate(values)
        )
        lines.append(
            Line(label=name or "(none)", colour=COLOURS[position % len(COLOURS)], points=points)
        )
    return Chart(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        lines=lines,
        y_max=y_max,
        x_first=labels[0][11:16] if labels else "",
        x_last=labels[-1][11:16] if labels else "",
        plot_left=MARGIN_LEFT,
        plot_bottom=HEIGHT - MARGIN_BOTTOM,
        plot_right=WIDTH - MARGIN_RIGHT,
        plot_top=MARGIN_TOP,
    )
