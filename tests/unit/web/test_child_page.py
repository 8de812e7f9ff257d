"""The child's page's own helpers: the progress charts drawn from the assessment API's answer, and
the name shown from the pupil's record."""

from __future__ import annotations

from services.web.pages.child import progress_charts, pupil_name


def point(day: str, percent: float, needs: dict[str, float]) -> dict[str, object]:
    return {"completed_at": f"{day}T10:00:00+00:00",
            "strands": {"being": {"percent": percent, "threshold_met": False, "need_percents": needs}}}


def test_a_line_per_need_and_the_strand_and_bars_of_the_latest() -> None:
    progress = {"assessments": [point("2026-01-10", 40, {"Self": 30, "Others": 50}),
                                point("2026-03-10", 60, {"Self": 55, "Others": 65})]}
    (chart,) = progress_charts(progress)
    assert chart["strand"] == "being"
    assert [s.name for s in chart["line"].series] == ["being (strand)", "Self", "Others"]
    assert [p.value for p in chart["line"].series[1].points] == [30, 55]
    assert [(b.label, b.value) for b in chart["bars"].bars] == [("Self", 55), ("Others", 65)]


def test_two_assessments_the_same_day_keep_their_own_columns() -> None:
    (chart,) = progress_charts({"assessments": [point("2026-01-10", 40, {"Self": 30}),
                                                point("2026-01-10", 50, {"Self": 45})]})
    assert [label for _, label in chart["line"].x_labels] == ["10 Jan 2026 (1)", "10 Jan 2026 (2)"]


def test_no_completed_assessment_no_chart() -> None:
    assert progress_charts({"assessments": []}) == []


def test_the_preferred_name_first() -> None:
    assert pupil_name({"legal_forename": "Ava", "legal_surname": "Demo", "preferred_forename": "Evie"}) == "Evie Demo"
    assert pupil_name({}) == "This pupil"
