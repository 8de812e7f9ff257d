"""The consent and sharing screens' own logic (services/web/pages/share.py): the decision shown
before a share, read from the consent service's status, and the decision's date from the form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.datastructures import FormData

from services.web.pages.share import _decided_at, consent_decision


def status(purpose: str, state: str, allowed: dict[str, bool],
           lawful_basis: str | None = None) -> list[dict[str, Any]]:
    return [{"purpose": purpose, "status": state, "sharing_allowed": allowed, "lawful_basis": lawful_basis,
             "valid_until": None, "decision_id": "d"}]


def test_allowed_under_consent_or_another_basis() -> None:
    granted = consent_decision(status("share_camhs", "granted", {"report": True}), "camhs", "report")
    assert granted["allow"] and "consent" in granted["reason"]
    basis = consent_decision(status("share_camhs", "withdrawn", {"report": True}, "public_task"), "camhs", "report")
    assert basis["allow"] and "public task" in basis["reason"]


def test_refused_and_why() -> None:
    for state, words in (("none", "no consent has been recorded"), ("refused", "refused consent"),
                         ("withdrawn", "withdrew their consent")):
        decision = consent_decision(status("share_camhs", state, {"report": False}), "camhs", "report")
        assert not decision["allow"] and words in decision["reason"], state
    not_covered = consent_decision(status("share_camhs", "granted", {"report": False}), "camhs", "report")
    assert "does not cover" in not_covered["reason"]
    # Another category's consent allows nothing here (fail closed).
    assert not consent_decision(status("share_social_care", "granted", {"report": True}), "camhs", "report")["allow"]


def form(day: date, rendered_at: str = "") -> FormData:
    return FormData({"decided_day": str(day.day), "decided_month": str(day.month), "decided_year": str(day.year),
                     "rendered_at": rendered_at})


def test_the_decisions_date() -> None:
    rendered = datetime.now(UTC) - timedelta(seconds=5)
    assert _decided_at(form(date.today(), rendered.isoformat())) == (rendered, None)  # same form, same command
    at, error = _decided_at(form(date.today(), (datetime.now(UTC) + timedelta(hours=1)).isoformat()))
    assert error is None and at is not None and at <= datetime.now(UTC)  # a forged future render time: now
    past = date.today() - timedelta(days=3)
    assert _decided_at(form(past)) == (datetime(past.year, past.month, past.day, 12, tzinfo=UTC), None)
    assert _decided_at(form(date.today() + timedelta(days=1)))[1] == "Date of the decision: it must be today or in the past"
    assert "real date" in str(_decided_at(FormData({"decided_day": "31", "decided_month": "2", "decided_year": "2026"}))[1])
