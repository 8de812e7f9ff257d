"""Charts render as inline SVG with a title, a description and the same figures in a table; no
inline style, no script (the CSP allows neither)."""

from __future__ import annotations

from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.web.charts import bar_chart, line_chart
from services.web.core import TEMPLATES


def render(macro: str, chart: object) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    return env.from_string(f'{{% from "charts.html" import {macro} %}}{{{{ {macro}(chart) }}}}').render(chart=chart)


def test_bar_chart_is_accessible_svg_with_a_table() -> None:
    chart = bar_chart("c1", "Pupils by level", "How many pupils <b>", [("Secure", 4), ("Emerging", 7.5)], unit="pupils")
    html = render("bar_chart", chart)
    assert '<title id="c1-title">Pupils by level</title>' in html and "&lt;b&gt;" in html
    assert 'aria-labelledby="c1-title c1-desc"' in html and "<table" in html and ">7.5<" in html
    assert "style=" not in html and "<script" not in html
    assert chart.bars[1].width > chart.bars[0].width


def test_line_chart_skips_missing_points() -> None:
    chart = line_chart("c2", "Progress", "Score per term", ["Autumn", "Spring", "Summer"],
                       [("Self", [1, None, 3]), ("Others", [2, 2, 2])], maximum=4)
    assert len(chart.series[0].points) == 2 and chart.series[0].path.startswith("M")
    html = render("line_chart", chart)
    assert "<path" in html and "–" in html and "style=" not in html
