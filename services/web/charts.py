"""Charts as server-drawn inline SVG: the geometry here, the markup in templates/charts.html
(`{% from "charts.html" import bar_chart, line_chart %}`). No chart script: they work without
JavaScript, under the strict CSP (colours come from classes in static/web.css, never `style=`), and
every chart carries a <title>, a <desc> and the same figures in a table beside it for screen readers.

    chart = bar_chart("Working at vs expected", "Pupils per strand", [("Self", 4), ("Others", 7)], unit="pupils")
    {{ bar_chart(chart) }}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH = 640
BAR_HEIGHT = 28
GAP = 10
LABEL_WIDTH = 180
PLOT_HEIGHT = 240
MARGIN = 40


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float
    shade: int  # 0..5: the class flourish-chart__shade--N colours it
    flagged: bool = False


@dataclass(frozen=True)
class BarChart:
    id: str
    title: str
    description: str
    unit: str
    bars: list[Bar]
    width: int
    height: int
    label_width: int
    ticks: list[tuple[float, float]]  # (x, value)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    value: float


@dataclass(frozen=True)
class Series:
    name: str
    points: list[Point]
    path: str
    shade: int


@dataclass(frozen=True)
class LineChart:
    id: str
    title: str
    description: str
    unit: str
    series: list[Series]
    x_labels: list[tuple[float, str]]
    ticks: list[tuple[float, float]]  # (y, value)
    width: int
    height: int
    left: int = MARGIN
    bottom: float = field(default=0.0)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def bar_chart(chart_id: str, title: str, description: str, values: Sequence[tuple[str, float]], *,
              unit: str = "", maximum: float | None = None, flagged: Sequence[str] = ()) -> BarChart:
    """Horizontal bars, one per (label, value), longest at `maximum` (default: a round number above
    the largest value)."""
    top = maximum or _nice_max(max((v for _, v in values), default=0))
    plot = WIDTH - LABEL_WIDTH - 60
    bars = [Bar(label, value, LABEL_WIDTH, GAP + i * (BAR_HEIGHT + GAP), max(0.0, plot * value / top), BAR_HEIGHT,
                i % 6, label in flagged) for i, (label, value) in enumerate(values)]
    ticks = [(LABEL_WIDTH + plot * f, top * f) for f in (0, 0.25, 0.5, 0.75, 1)]
    height = GAP + len(bars) * (BAR_HEIGHT + GAP) + 24
    return BarChart(chart_id, title, description, unit, bars, WIDTH, height, LABEL_WIDTH, ticks)


def line_chart(chart_id: str, title: str, description: str, x_labels: Sequence[str],
               series: Sequence[tuple[str, Sequence[float | None]]], *, unit: str = "",
               minimum: float = 0.0, maximum: float | None = None) -> LineChart:
    """One line per (name, values), values aligned with `x_labels` (None: no point there)."""
    values = [v for _, vs in series for v in vs if v is not None]
    top = maximum if maximum is not None else _nice_max(max(values, default=1.0))
    plot_width = WIDTH - 2 * MARGIN
    step = plot_width / max(1, len(x_labels) - 1)

    def y_of(value: float) -> float:
        return MARGIN / 2 + PLOT_HEIGHT * (1 - (value - minimum) / ((top - minimum) or 1))

    drawn = []
    for shade, (name, vs) in enumerate(series):
        points = [Point(MARGIN + i * step, y_of(v), x_labels[i], v) for i, v in enumerate(vs) if v is not None]
        path = " ".join(f"{'M' if i == 0 else 'L'}{p.x:.1f} {p.y:.1f}" for i, p in enumerate(points))
        drawn.append(Series(name, points, path, shade % 6))
    ticks = [(y_of(minimum + (top - minimum) * f), minimum + (top - minimum) * f) for f in (0, 0.25, 0.5, 0.75, 1)]
    labels = [(MARGIN + i * step, label) for i, label in enumerate(x_labels)]
    return LineChart(chart_id, title, description, unit, drawn, labels, ticks, WIDTH,
                     int(PLOT_HEIGHT + MARGIN * 1.5), bottom=y_of(minimum))
