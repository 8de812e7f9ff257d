"""The intervention report, anonymised: what the Thrive-style report shows, from the read models.

Gender and year group are the only things about the child it holds; they are fetched from the
assessment service for the request and never stored. No name, date of birth or UPN ever reaches
this module. Charts are inline SVG drawn here, so the HTML stands alone and prints to PDF as is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

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


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{round(value):.0f}%"


def _date(value: Any) -> str:
    return value.strftime("%d/%m/%y") if value else ""


def effective_levels(observations: list[Any]) -> dict[Any, dict[str, str]]:
    """The level each statement stood at in each assessment: its latest observation there,
    a corrected observation giving way to its correction."""
    corrected = {o.corrects for o in observations if o.corrects}
    levels: dict[Any, dict[str, str]] = defaultdict(dict)
    for o in sorted(observations, key=lambda o: (o.observed_at, str(o.observation_id))):
        if o.assessment_id is not None and o.observation_id not in corrected:
            levels[o.assessment_id][o.statement_id] = o.level
    return dict(levels)


# --- Charts ----------------------------------------------------------------------------------------


def need_chart(title: str, needs: list[tuple[str, float]], threshold: float) -> str:
    """Bars of each need's % with the level bands behind them and the threshold line."""
    w, h, left, top, bottom = 520, 260, 70, 30, 40
    plot_h, plot_w = h - top - bottom, w - left - 20
    y = lambda pct: top + plot_h * (1 - pct / 100)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">',
             f'<title>{escape(title)}</title>',
             f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, level in enumerate(LEVELS):
        y0 = y(25 * (i + 1))
        parts.append(f'<rect x="{left}" y="{y0:.1f}" width="{plot_w}" height="{plot_h / 4:.1f}" fill="{"#f4f4f4" if i % 2 else "#fafafa"}"/>')
        parts.append(f'<text x="{left - 6}" y="{y0 + plot_h / 8 + 4:.1f}" text-anchor="end" font-size="11">{LEVEL_LABELS[level]}</text>')
    slot = plot_w / max(len(needs), 1)
    for i, (name, pct) in enumerate(needs):
        x = left + slot * i + slot * 0.2
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y(pct):.1f}" width="{slot * 0.6:.1f}" height="{y(0) - y(pct):.1f}" fill="{COLOURS[i % 6]}"><title>{escape(name)}: {_pct(pct)}</title></rect>')
        parts.append(f'<text x="{x + slot * 0.3:.1f}" y="{y(pct) - 4:.1f}" text-anchor="middle" font-size="12">{_pct(pct)}</text>')
        parts.append(f'<text x="{x + slot * 0.3:.1f}" y="{h - bottom + 16}" text-anchor="middle" font-size="12">{escape(name)}</text>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" stroke="#c00" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{left + plot_w}" y="{y(threshold) - 3:.1f}" text-anchor="end" font-size="10" fill="#c00">threshold {_pct(threshold)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def statement_chart(title: str, numbers: list[tuple[str, int, str]], dates: list[tuple[Any, str]],
                    levels: dict[Any, dict[str, str]]) -> str:
    """Level per statement (Q numbers), one bar per assessment date, with a legend of the dates."""
    w, h, left, top, bottom = 760, 250, 80, 30, 60
    plot_h, plot_w = h - top - bottom, w - left - 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">',
             f'<title>{escape(title)}</title>',
             f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>']
    step = plot_h / 4
    for i, level in enumerate(LEVELS):
        yl = top + plot_h - step * (i + 1)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{yl:.1f}" y2="{yl:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{yl + 4:.1f}" text-anchor="end" font-size="11">{LEVEL_LABELS[level]}</text>')
    slot = plot_w / max(len(numbers), 1)
    bar = slot * 0.8 / max(len(dates), 1)
    for i, (statement_id, number, text) in enumerate(numbers):
        x0 = left + slot * i + slot * 0.1
        for j, (assessment_id, label) in enumerate(dates):
            level = levels.get(assessment_id, {}).get(statement_id)
            if level is None:
                continue
            height = step * (LEVELS.index(level) + 1)
            parts.append(f'<rect class="bar" x="{x0 + bar * j:.1f}" y="{top + plot_h - height:.1f}" width="{bar:.1f}" height="{height:.1f}" fill="{COLOURS[j % 6]}"><title>Q{number} {escape(text)} ({escape(label)}): {LEVEL_LABELS[level]}</title></rect>')
        parts.append(f'<text x="{x0 + slot * 0.4:.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10">Q{number}</text>')
    for j, (_, label) in enumerate(dates):
        lx = left + j * 110
        parts.append(f'<rect x="{lx}" y="{h - 22}" width="10" height="10" fill="{COLOURS[j % 6]}"/><text x="{lx + 14}" y="{h - 13}" font-size="11">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- The report ------------------------------------------------------------------------------------


def render_html(data: ReportData) -> str:
    if not data.scores:
        raise NoAssessment("the pupil has no completed assessment")
    fw = data.framework
    baseline = next((s for s in data.scores if s.baseline), data.scores[0])
    strand = data.scores[-1].working_at_strand or baseline.strand
    strand_name = fw.strand_names.get(strand, strand)
    first = next((s for s in data.scores if s.strand == strand), baseline)
    on_strand = [s for s in data.scores if s.strand == strand]
    latest = on_strand[-1] if on_strand else first
    needs = fw.needs_of.get(strand, sorted(first.need_percents))
    name = lambda need: fw.need_names.get(need, need)  # noqa: E731
    who = ", ".join(x for x in [GENDERS.get((data.gender or "").lower(), data.gender),
                                f"Year {data.year_group}" if data.year_group else None] if x) or "Not available"

    def statement(sid: str) -> str:
        number, text, need = fw.statements.get(sid, (0, sid, ""))
        return f"{number}. {escape(text)}" + (f" ({escape(name(need))})" if need else "")

    h: list[str] = []
    h.append("<section><h2>Gender and year group</h2>" f'<p id="who">{escape(who)}</p></section>')
    h.append('<section id="profile"><h2>Profile: stage of development and % scores</h2>'
             f"<p>The assessment suggested working at the <strong>{escape(fw.strand_names.get(first.working_at_strand, first.working_at_strand))}</strong> stage.</p>"
             "<p>Scores of:</p><ul>"
             + "".join(f"<li>{escape(name(n))} {_pct(first.need_percents.get(n))}</li>" for n in needs)
             + f"</ul><p>The average score at the first assessment was <strong>{_pct(first.strand_percent)}</strong> (see Chart 1).</p></section>")

    plans_html = []
    total_sessions = sum(p["sessions"] for p in data.plans)
    total_minutes = sum(p["minutes"] for p in data.plans)
    for i, plan in enumerate(data.plans, 1):
        freq = plan["frequency"] or ""
        plans_html.append(
            f'<div class="plan"><h3>Action Plan {i}</h3><p>Learning targets:</p><ul>'
            + "".join(f"<li>{statement(t)}</li>" for t in plan["targets"])
            + "</ul><p>Activities: " + escape(", ".join(plan["activities"])) + "</p>"
            + f"<p>{escape(freq)}. Sessions held: <strong>{plan['sessions']}</strong> ({plan['minutes'] / 60:g} hrs).</p></div>")
    h.append('<section id="plans"><h2>Strategies and activities in the action plans, and sessions</h2>'
             + ("".join(plans_html) or "<p>No action plan has been issued yet.</p>")
             + f'<p id="sessions-total">To date {total_sessions} sessions have been completed ({total_minutes / 60:g} hrs contact time).</p></section>')

    rows = []
    for i, score in enumerate(on_strand, 1):
        parts = ", ".join(f"{escape(name(n))} {_pct(score.need_percents.get(n))}" for n in needs)
        rows.append(f"<li>Assessment {i} ({_date(score.scored_at)}) = {parts}. Average score: <strong>{_pct(score.strand_percent)}</strong> (see Chart {i})</li>")
    change = latest.strand_percent - first.strand_percent
    h.append('<section id="review"><h2>Outcome of review of progress</h2><ul>' + "".join(rows) + "</ul>"
             + (f"<p>From the first to the latest assessment the average score at {escape(strand_name)} moved from "
                f"{_pct(first.strand_percent)} to {_pct(latest.strand_percent)} ({change:+.0f} points).</p>" if len(on_strand) > 1 else "")
             + "</section>")

    threshold = latest.threshold_percent or fw.threshold
    if latest.threshold_met:
        advice = f"The child has reached the threshold of {_pct(threshold)} at {escape(strand_name)} and can move on to the next strand."
    else:
        advice = (f"This child will continue to need to focus at the developmental strand of ‘{escape(strand_name)}’ until "
                  f"they reach the required threshold of {_pct(threshold)}.")
    focus = latest.focus_statements or []
    h.append('<section id="recommendations"><h2>Recommendations</h2>' f"<p>{advice}</p>"
             + ("<p>Recommended areas still needing focus (still at a Rarely/Emerging level):</p><ul>"
                + "".join(f"<li>{statement(s)}</li>" for s in sorted(focus, key=lambda s: fw.statements.get(s, (0,))[0])) + "</ul>"
                if focus else "<p>No statement of the strand is still at Rarely or Emerging.</p>")
             + "</section>")

    charts = []
    for i, score in enumerate(on_strand, 1):
        charts.append(need_chart(f"Chart {i}: skill level by need ({_date(score.scored_at)})",
                                 [(name(n), score.need_percents.get(n, 0.0)) for n in needs], threshold))
    dates = [(s.assessment_id, _date(s.scored_at)) for s in on_strand]
    for need in needs:
        numbers = sorted(((sid, num, text) for sid, (num, text, n) in fw.statements.items() if n == need), key=lambda x: x[1])
        if numbers:
            charts.append(statement_chart(f"Level per statement: {name(need)}", numbers, dates, data.levels))
    h.append('<section id="charts"><h2>Charts</h2>' + "".join(f'<figure>{c}</figure>' for c in charts) + "</section>")

    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Intervention report</title>"
            "<style>body{font-family:'DejaVu Sans',Arial,sans-serif;margin:2em;color:#222}h1{color:#1f6f8b}"
            "section{margin-bottom:1.2em;page-break-inside:avoid}figure{margin:0 0 1em 0}"
            ".note{font-size:.9em;color:#555}</style></head><body>"
            "<h1>Intervention report</h1>"
            '<p class="note">Anonymised: this report holds the child\'s gender and year group only, so that it can be '
            "shared with other agencies without identifying the child.</p>"
            + "".join(h) + "</body></html>")
