"""The intervention report, anonymised: what the Thrive-style report shows, from the read models.

Gender and year group are the only things about the child it holds; they are fetched from the
assessment service for the request and never stored. No name, date of birth or UPN ever reaches
this module. Python decides what the report says and where each bar of its charts goes (a plain
view model, `Report`); templates/intervention_report.html and templates/charts.svg only format it,
with autoescape on. Charts are inline SVG, so the HTML stands alone and prints to PDF as is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.reporting.rendering import render

LEVELS = ["rarely", "emerging", "developing", "secure"]
LEVEL_LABELS = {"rarely": "Rarely", "emerging": "Emerging", "developing": "Developing", "secure": "Secure"}
COLOURS = ["#1f6f8b", "#e07a5f", "#3d405b", "#81b29a", "#f2cc8f", "#6d597a"]
GENDERS = {"m": "Male", "f": "Female", "male": "Male", "female": "Female"}


class NoAssessment(Exception):
    """The pupil has no completed assessment: there is nothing to report."""


@dataclass(frozen=True)
class Framework:
    """What the report needs of a framework version: names, statements, threshold."""

    threshold: float
    strand_names: dict[str, str]
    strand_order: list[str]
    need_names: dict[str, str]
    needs_of: dict[str, list[str]]
    statements: dict[str, tuple[int, str, str]]  # id -> (number, text, need id)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Framework:
        strand_names, need_names, needs_of, statements = {}, {}, {}, {}
        for strand in doc["strands"]:
            strand_names[strand["id"]] = strand["name"]
            needs_of[strand["id"]] = [need["id"] for need in strand["needs"]]
            for need in strand["needs"]:
                need_names[need["id"]] = need["name"]
                for st in need["statements"]:
                    statements[f"{strand['id']}.{st['number']}"] = (st["number"], st["text"], need["id"])
        return cls(float(doc["threshold_percent"]), strand_names, [s["id"] for s in doc["strands"]], need_names,
                   needs_of, statements)


@dataclass
class ReportData:
    gender: str | None
    year_group: str | None
    framework: Framework
    scores: list[Any]  # rm_strand_scores rows, oldest first
    plans: list[dict[str, Any]]
    levels: dict[Any, dict[str, str]] = field(default_factory=dict)  # assessment id -> statement -> level
    assessed_on: dict[Any, datetime] = field(default_factory=dict)


def effective_levels(observations: list[Any]) -> dict[Any, dict[str, str]]:
    """The level each statement stood at in each assessment: its latest observation there,
    a corrected observation giving way to its correction."""
    corrected = {o.corrects for o in observations if o.corrects}
    levels: dict[Any, dict[str, str]] = defaultdict(dict)
    for o in sorted(observations, key=lambda o: (o.observed_at, str(o.observation_id))):
        if o.assessment_id is not None and o.observation_id not in corrected:
            levels[o.assessment_id][o.statement_id] = o.level
    return dict(levels)


# --- Charts: where every band, bar and label goes --------------------------------------------------
# The view model's classes are slotted, not frozen: a report builds some 200 of them per render, and
# frozen dataclasses took three times as long to build (bench/reporting.py's render figure).


@dataclass(slots=True)
class Band:
    """One level's band behind the bars (need chart) or its grid line (statement chart)."""

    label: str
    y: float
    height: float
    colour: str
    label_y: float


@dataclass(slots=True)
class NeedBar:
    """One need's % as a bar, its value above it and its name below the axis."""

    need: str
    percent: float
    fill: str
    x: float
    y: float
    width: float
    height: float
    centre: float
    name_y: int

    @property
    def value_y(self) -> float:
        return self.y - 4


@dataclass(slots=True)
class _Frame:
    """The frame both charts share: size, the plot's left and right edges, where titles go."""

    width: int
    height: int
    left: int
    plot_width: int

    @property
    def title_x(self) -> float:
        return self.width / 2

    @property
    def label_x(self) -> int:
        return self.left - 6

    @property
    def right(self) -> int:
        return self.left + self.plot_width


@dataclass(slots=True)
class NeedChart(_Frame):
    """Bars of each need's % with the level bands behind them and the threshold line."""

    scored_at: datetime | None
    bands: list[Band]
    bars: list[NeedBar]
    threshold: float
    threshold_y: float

    @property
    def threshold_label_y(self) -> float:
        return self.threshold_y - 3


@dataclass(slots=True)
class LevelBar:
    """One assessment's level of a statement."""

    scored_at: datetime | None
    level: str
    fill: str
    x: float
    y: float
    width: float
    height: float


@dataclass(slots=True)
class StatementColumn:
    """One statement: a bar per assessment that rated it, its Q number below the axis."""

    number: int
    text: str
    bars: list[LevelBar]
    centre: float
    label_y: int


@dataclass(slots=True)
class LegendEntry:
    """One assessment date and its colour, under the statement chart."""

    scored_at: datetime | None
    fill: str
    x: int

    @property
    def text_x(self) -> int:
        return self.x + 14


@dataclass(slots=True)
class StatementChart(_Frame):
    """Level per statement (Q numbers), one bar per assessment date, with a legend of the dates."""

    need: str
    grid: list[Band]
    columns: list[StatementColumn]
    legend: list[LegendEntry]

    @property
    def legend_y(self) -> int:
        return self.height - 22

    @property
    def legend_text_y(self) -> int:
        return self.height - 13


def need_chart(scored_at: datetime | None, needs: list[tuple[str, float]], threshold: float) -> NeedChart:
    """Where the bars of one assessment's need % go, on a 0-100 scale banded by level."""
    w, h, left, top, bottom = 520, 260, 70, 30, 40
    plot_h, plot_w = h - top - bottom, w - left - 20

    def y(pct: float) -> float:
        return top + plot_h * (1 - pct / 100)

    bands = [Band(LEVEL_LABELS[level], y(25 * (i + 1)), plot_h / 4, "#f4f4f4" if i % 2 else "#fafafa",
                  y(25 * (i + 1)) + plot_h / 8 + 4) for i, level in enumerate(LEVELS)]
    slot = plot_w / max(len(needs), 1)
    bars = []
    for i, (name, pct) in enumerate(needs):
        x = left + slot * i + slot * 0.2
        bars.append(NeedBar(name, pct, COLOURS[i % 6], x, y(pct), slot * 0.6, y(0) - y(pct), x + slot * 0.3,
                            h - bottom + 16))
    return NeedChart(w, h, left, plot_w, scored_at, bands, bars, threshold, y(threshold))


def statement_chart(need: str, numbers: list[tuple[str, int, str]], dates: list[tuple[Any, datetime | None]],
                    levels: dict[Any, dict[str, str]]) -> StatementChart:
    """Where each statement's level bars go, one per assessment (unrated statements leave a gap)."""
    w, h, left, top, bottom = 760, 250, 80, 30, 60
    plot_h, plot_w = h - top - bottom, w - left - 20
    step = plot_h / 4
    grid = [Band(LEVEL_LABELS[level], top + plot_h - step * (i + 1), 0.0, "#ddd", top + plot_h - step * (i + 1) + 4)
            for i, level in enumerate(LEVELS)]
    slot = plot_w / max(len(numbers), 1)
    width = slot * 0.8 / max(len(dates), 1)
    columns = []
    for i, (statement_id, number, text) in enumerate(numbers):
        x0 = left + slot * i + slot * 0.1
        bars = []
        for j, (assessment_id, scored_at) in enumerate(dates):
            level = levels.get(assessment_id, {}).get(statement_id)
            if level is not None:
                height = step * (LEVELS.index(level) + 1)
                bars.append(LevelBar(scored_at, LEVEL_LABELS[level], COLOURS[j % 6], x0 + width * j,
                                     top + plot_h - height, width, height))
        columns.append(StatementColumn(number, text, bars, x0 + slot * 0.4, top + plot_h + 14))
    legend = [LegendEntry(scored_at, COLOURS[j % 6], left + j * 110) for j, (_, scored_at) in enumerate(dates)]
    return StatementChart(w, h, left, plot_w, need, grid, columns, legend)


# --- The report ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Statement:
    """A statement as the report names it: number, text and the need it belongs to."""

    number: int
    text: str
    need: str | None


@dataclass(slots=True)
class NeedScore:
    """A need's name and its % in one assessment (None: not scored)."""

    need: str
    percent: float | None


@dataclass(slots=True)
class Assessment:
    """One assessment at the working-at strand: each need's % and the average."""

    scored_at: datetime | None
    needs: list[NeedScore]
    average: float


@dataclass(slots=True)
class Plan:
    """An action plan as the report tells it: targets, activities, how often, sessions held."""

    targets: list[Statement]
    activities: list[str]
    frequency: str
    sessions: int
    hours: float


@dataclass(slots=True)
class Progress:
    """From the first to the latest assessment at the strand (shown once there are two)."""

    start: float
    end: float
    change: float


@dataclass(slots=True)
class Report:
    """Everything the intervention report says, ready to format."""

    who: str
    suggested_strand: str
    first: Assessment
    plans: list[Plan]
    sessions: int
    hours: float
    assessments: list[Assessment]
    strand: str
    progress: Progress | None
    threshold: float
    threshold_met: bool
    focus: list[Statement]
    need_charts: list[NeedChart]
    statement_charts: list[StatementChart]


def build_report(data: ReportData) -> Report:
    """What the report says: the baseline, the strand the child works at and its review, the plans."""
    if not data.scores:
        raise NoAssessment("the pupil has no completed assessment")
    fw = data.framework
    baseline = next((s for s in data.scores if s.baseline), data.scores[0])
    strand = data.scores[-1].working_at_strand or baseline.strand
    first = next((s for s in data.scores if s.strand == strand), baseline)
    on_strand = [s for s in data.scores if s.strand == strand]
    latest = on_strand[-1] if on_strand else first
    needs = fw.needs_of.get(strand, sorted(first.need_percents))

    def name(need: str) -> str:
        return fw.need_names.get(need, need)

    def statement(sid: str) -> Statement:
        number, text, need = fw.statements.get(sid, (0, sid, ""))
        return Statement(number, text, name(need) if need else None)

    def assessment(score: Any) -> Assessment:
        return Assessment(score.scored_at, [NeedScore(name(n), score.need_percents.get(n)) for n in needs],
                          score.strand_percent)

    who = ", ".join(x for x in [GENDERS.get((data.gender or "").lower(), data.gender),
                                f"Year {data.year_group}" if data.year_group else None] if x) or "Not available"
    plans = [Plan([statement(t) for t in p["targets"]], list(p["activities"]), p["frequency"] or "", p["sessions"],
                  p["minutes"] / 60) for p in data.plans]
    progress = None
    if len(on_strand) > 1:
        progress = Progress(first.strand_percent, latest.strand_percent, latest.strand_percent - first.strand_percent)
    threshold = latest.threshold_percent or fw.threshold
    focus = sorted(latest.focus_statements or [], key=lambda s: fw.statements.get(s, (0,))[0])

    need_charts = [need_chart(s.scored_at, [(name(n), s.need_percents.get(n, 0.0)) for n in needs], threshold)
                   for s in on_strand]
    dates = [(s.assessment_id, s.scored_at) for s in on_strand]
    statement_charts = []
    for need in needs:
        numbers = sorted(((sid, num, text) for sid, (num, text, n) in fw.statements.items() if n == need),
                         key=lambda x: x[1])
        if numbers:
            statement_charts.append(statement_chart(name(need), numbers, dates, data.levels))

    return Report(
        who=who,
        suggested_strand=fw.strand_names.get(first.working_at_strand, first.working_at_strand),
        first=assessment(first),
        plans=plans,
        sessions=sum(p["sessions"] for p in data.plans),
        hours=sum(p["minutes"] for p in data.plans) / 60,
        assessments=[assessment(s) for s in on_strand],
        strand=fw.strand_names.get(strand, strand),
        progress=progress,
        threshold=threshold,
        threshold_met=bool(latest.threshold_met),
        focus=[statement(s) for s in focus],
        need_charts=need_charts,
        statement_charts=statement_charts,
    )


def render_html(data: ReportData) -> str:
    """The report as one standalone HTML page (templates/intervention_report.html)."""
    return render("intervention_report.html", report=build_report(data))
