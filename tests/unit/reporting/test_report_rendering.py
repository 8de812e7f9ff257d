"""The intervention report's HTML comes from templates with autoescape on: it keeps its sections
and wording, and a hostile value that reaches it (a statement's text, a need's name, an activity)
is text in the HTML and in its SVG charts, never markup."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

from services.reporting.readmodels.report import Framework, NoAssessment, ReportData, render_html

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><svg onload=alert(1)>'
QUOTED = "'><img src=x onerror=alert(1)>"
TITLE = "</title><script>alert(2)</script>"
HOSTILE = (SCRIPT, BREAKOUT, QUOTED, TITLE)

HTML_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "section", "strong", "ul", "li",
             "div", "figure"}
SVG_TAGS = {"svg", "title", "text", "rect", "line"}


def report_data(statement: str = "Is willing to work with a partner", need: str = "Being Safe",
                activity: str = "Sand tray", strand: str = "Being", frequency: str = "2 × 30 min a week",
                assessments: int = 3) -> ReportData:
    texts = [statement if n == 3 else f"Statement {n}" for n in range(1, 46)]
    statements = [{"number": n, "text": text} for n, text in enumerate(texts, 1)]
    framework = Framework.from_document({"threshold_percent": 64, "strands": [{"id": "being", "name": strand, "needs": [
        {"id": "being.safe", "name": need, "statements": statements[:15]},
        {"id": "being.special", "name": "Being Special", "statements": statements[15:30]},
        {"id": "being.needs-met", "name": "Having Needs Met", "statements": statements[30:]}]}]})
    day = datetime(2026, 1, 5, tzinfo=UTC)
    scores = [SimpleNamespace(assessment_id=i, strand="being", baseline=i == 0, working_at_strand="being",
                              need_percents={"being.safe": 51 + 9 * i, "being.special": 29 + 14 * i,
                                             "being.needs-met": 29 + 6 * i},
                              strand_percent=36 + 10 * i, threshold_percent=64, threshold_met=False,
                              focus_statements=["being.8", "being.3", "being.25"],
                              scored_at=day + timedelta(days=90 * i))
              for i in range(assessments)]
    levels = {i: {f"being.{n}": ["rarely", "emerging", "developing", "secure"][(n + i) % 4] for n in range(1, 46)}
              for i in range(assessments)}
    plans = [{"targets": ["being.3", "being.8"], "activities": [activity, "Story"], "frequency": frequency,
              "sessions": 15, "minutes": 450},
             {"targets": ["being.25"], "activities": ["Puppets"], "frequency": None, "sessions": 14, "minutes": 420}]
    return ReportData("M", "4", framework, scores, plans, levels)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text between tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


def charts_of(page: str) -> list[ET.Element]:
    """Each inline <svg> of the page, parsed as the XML it must be."""
    pieces = page.split("<svg ")[1:]
    return [ET.fromstring("<svg " + piece[:piece.index("</svg>") + len("</svg>")]) for piece in pieces]


def test_the_report_keeps_its_sections_ids_and_wording():
    page = render_html(report_data())
    tags = parse(page).tags
    ids = {value for _, attrs in tags for name, value in attrs if name == "id"}
    assert ids == {"who", "profile", "plans", "sessions-total", "review", "recommendations", "charts"}
    classes = [value for _, attrs in tags for name, value in attrs if name == "class"]
    assert classes.count("plan") == 2 and classes.count("chart") == 6 and "bar" in classes
    for expected in ['<p id="who">Male, Year 4</p>', "working at the <strong>Being</strong> stage",
                     "<li>Being Safe 51%</li>", "first assessment was <strong>36%</strong> (see Chart 1)",
                     "<h3>Action Plan 2</h3>", "<li>3. Is willing to work with a partner (Being Safe)</li>",
                     "Activities: Sand tray, Story", "Sessions held: <strong>15</strong> (7.5 hrs)",
                     "To date 29 sessions have been completed (14.5 hrs contact time).",
                     "Assessment 3 (04/07/26) = Being Safe 69%, Being Special 57%, Having Needs Met 41%. "
                     "Average score: <strong>56%</strong> (see Chart 3)",
                     "moved from 36% to 56% (+20 points)", "required threshold of 64%",
                     "<title>Chart 2: skill level by need (05/04/26)</title>", "threshold 64%",
                     "<title>Level per statement: Having Needs Met</title>"]:
        assert expected in page, expected
    focus = page[page.index('id="recommendations"'):page.index('id="charts"')]
    assert focus.index("3. Is willing") < focus.index("8. Statement 8") < focus.index("25. Statement 25")


def test_one_assessment_and_no_plan_are_said_in_words():
    data = report_data(assessments=1)
    data.plans = []
    page = render_html(data)
    assert "No action plan has been issued yet." in page and "moved from" not in page
    with pytest.raises(NoAssessment):
        render_html(report_data(assessments=0))


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("where", ["statement", "need", "activity", "strand", "frequency"])
def test_a_hostile_value_reaching_the_report_is_text_in_its_html_and_svg(where, hostile):
    page = render_html(report_data(**{where: hostile}))

    elements = parse(page)
    assert {tag for tag, _ in elements.tags} <= HTML_TAGS | SVG_TAGS
    assert not [name for _, attrs in elements.tags for name, _ in attrs if name.lower().startswith("on")]
    assert sum(tag == "svg" for tag, _ in elements.tags) == page.count("<svg") == 6
    assert any(hostile in text for text in elements.text)  # it is there, as text a reader sees
    assert hostile not in page

    for chart in charts_of(page):
        for element in chart.iter():
            assert element.tag.rpartition("}")[2] in SVG_TAGS
            assert not [name for name in element.attrib if name.lower().startswith("on")]
    if where in ("statement", "need"):  # the charts name statements and needs in their titles
        titles = [element.text or "" for chart in charts_of(page) for element in chart.iter()]
        assert any(hostile in title for title in titles)
