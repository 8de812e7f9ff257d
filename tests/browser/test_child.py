"""A child's page in a real browser against the real platform: find a child in the pupil list, read
their progress (charts with their tables) and the suggestion, draft a plan and issue it as a named
practitioner, log a session by keyboard (htmx), review the plan, read the intervention report and
download its PDF; bad input shows the error summary and changes nothing; a SENCo of another academy
gets the no-access page; axe clean on every page. Each test makes its own child through the APIs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from playwright.sync_api import Browser, Page

from tests.browser.support import BrowserPlatform, axe, signed_in
from tests.integration.assessment.helpers import upn
from tests.unit.assessment.report import levels_at

SAMPLE = "flourish-sample-1"
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group"
OAK_HILL = "Oak Hill Primary"


@dataclass
class Child:
    pupil_id: str
    name: str
    class_id: str
    academy_id: str


def eventually(check: Callable[[], Any], timeout: float = 90, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.3)


def call(platform: BrowserPlatform, user: str, method: str, service: str, path: str, **kwargs: Any) -> Any:
    headers = {**platform.headers(user), "Idempotency-Key": str(uuid.uuid4()), **kwargs.pop("headers", {})}
    response = httpx.request(method, platform.api(service) + path, headers=headers, timeout=30, **kwargs)
    assert response.is_success, (path, response.status_code, response.text[:500])
    return response.json() if response.content else None


def a_child(platform: BrowserPlatform, *, assessed: bool = True) -> Child:
    """A new Oak Hill pupil in a class of their own, known to consent; assessed: with a completed
    Being assessment the planning and reporting services have taken in."""
    academy_id = str(platform.academies[OAK_HILL])
    forename, group = f"Quin{uuid.uuid4().hex[:6]}", f"T{uuid.uuid4().hex[:6]}"
    csv = f"{HEADER}\r\n{upn()},Zed,{forename},03/04/2017,F,4,{group}\r\n".encode()
    imported = call(platform, "senco", "POST", "assessment", f"/academies/{academy_id}/roster-imports", content=csv,
                    headers={"Content-Type": "text/csv"})
    pupil_id = str(imported["enrolled"][0]["pupil_id"])
    classes = call(platform, "senco", "GET", "assessment", f"/academies/{academy_id}/classes", params={"limit": 100})
    class_id = next(str(c["class_id"]) for c in classes["items"] if c["name"] == group)
    eventually(lambda: httpx.get(f"{platform.api('consent')}/pupils/{pupil_id}/consents",
                                 headers=platform.headers("senco")).status_code == 200, what="consent knows the pupil")
    child = Child(pupil_id, f"{forename} Zed", class_id, academy_id)
    if assessed:
        started = call(platform, "senco", "POST", "assessment", "/assessments",
                       json={"pupil_id": pupil_id, "strands": ["being"], "framework_version": SAMPLE})
        assessment_id = str(started["assessments"][0]["assessment_id"])
        call(platform, "senco", "POST", "assessment", "/observations/bulk", json={
            "observed_at": datetime.now(UTC).isoformat(),
            "ratings": [{"pupil_id": pupil_id, "statement_id": s, "level": level.value, "assessment_id": assessment_id}
                        for s, level in levels_at(1).items()]})
        call(platform, "senco", "POST", "assessment", f"/assessments/{assessment_id}/complete")

        def taken_in() -> bool:
            suggestion = httpx.get(f"{platform.api('planning')}/pupils/{pupil_id}/suggestion",
                                   headers=platform.headers("senco"))
            profile = httpx.get(f"{platform.api('reporting')}/pupils/{pupil_id}/profile", headers=platform.headers("senco"))
            return (suggestion.status_code == 200 and assessment_id in [str(a) for a in suggestion.json()["based_on"]]
                    and profile.status_code == 200 and str(profile.json()["latest_assessment_id"]) == assessment_id)

        eventually(taken_in, what="planning and reporting took the assessment in")
    return child


def plans_of(platform: BrowserPlatform, child: Child) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = call(platform, "senco", "GET", "planning", "/plans",
                                       params={"pupil_id": child.pupil_id})["items"]
    return items


def test_a_child_from_the_list_to_a_plan_a_session_and_the_report(platform: BrowserPlatform, page: Page) -> None:
    child = a_child(platform)
    signed_in(page, platform, "senco", next_path="/pupils")
    axe(page)
    page.get_by_label("Class").select_option(child.class_id)
    page.get_by_label("Name contains").fill(child.name.split()[0][:6])
    page.get_by_role("button", name="Show pupils").click()
    page.get_by_role("link", name=child.name).click()
    page.wait_for_url(f"{platform.web}/pupils/{child.pupil_id}")
    assert page.locator("h1").inner_text() == child.name
    # Progress: the charts and, beside each, the table of its figures.
    assert page.locator("svg.flourish-chart").count() == 2
    assert page.get_by_role("table", name="being: % over time (table)").is_visible()
    assert page.get_by_role("table", name="being: needs at the latest assessment (table)").is_visible()
    assert page.locator("#why li").count() >= 1  # the suggestion says why
    assert page.get_by_role("table", name="The latest 20 observations").is_visible()
    assert "Yes, consent allows it" not in page.locator("main").inner_text()  # nothing granted yet
    axe(page)

    # Draft from the suggestion, then issue as a named practitioner.
    page.get_by_label("Review on").fill(str(date.today() + timedelta(weeks=6)))
    page.get_by_role("button", name="Draft plan").click()
    (plan,) = plans_of(platform, child)
    assert plan["status"] == "draft"
    section = page.locator(f"#plan-{plan['plan_id']}")
    assert "draft" in section.inner_text()
    section.get_by_label("Issue as (the named practitioner)").fill("Priya Shah")
    section.get_by_role("button", name="Issue plan").click()
    section = page.locator(f"#plan-{plan['plan_id']}")
    assert "Issued by" in section.inner_text() and "Priya Shah" in section.inner_text()
    assert plans_of(platform, child)[0]["practitioner_id"] == "Priya Shah"
    axe(page)

    # Log a session by keyboard: into the minutes field, type, Enter (htmx answers the block in place).
    url = page.url
    minutes = section.get_by_label("Minutes")
    minutes.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("25")
    page.keyboard.press("Enter")
    page.locator(f"#totals-{plan['plan_id']}").filter(has_text="Sessions: 1, 25 minutes").wait_for()
    assert page.url == url  # in place, no page load
    logged = call(platform, "senco", "GET", "planning", f"/plans/{plan['plan_id']}/sessions")
    assert [s["minutes"] for s in logged["items"]] == [25]
    axe(page)

    # Review it against the latest scores.
    page.get_by_role("button", name="Review plan").click()
    assert plans_of(platform, child)[0]["status"] == "reviewed"
    assert "Reviewed on" in page.locator(f"#plan-{plan['plan_id']}").inner_text()
    page.get_by_role("button", name="Close plan").click()
    assert plans_of(platform, child)[0]["status"] == "closed"
    assert page.get_by_role("button", name="Log session").count() == 0  # no more sessions

    # The intervention report: HTML, then the PDF download.
    page.get_by_role("link", name="Read the intervention report").click()
    page.wait_for_url(f"{platform.web}/pupils/{child.pupil_id}/report")
    assert "Gender and year group" in page.locator("main").inner_text()
    assert child.name.split()[0] not in page.locator("main .flourish-report").inner_text()  # anonymised
    axe(page)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the report (PDF)").click()
    path = download_info.value.path()
    assert path is not None
    with open(path, "rb") as pdf:
        assert pdf.read(5) == b"%PDF-"


def test_bad_input_shows_the_error_summary_and_changes_nothing(platform: BrowserPlatform, page: Page) -> None:
    child = a_child(platform)
    signed_in(page, platform, "senco", next_path=f"/pupils/{child.pupil_id}")
    page.get_by_label("Minutes a session").fill("0")
    page.get_by_label("Review on").fill(str(date.today() + timedelta(weeks=6)))
    page.get_by_role("button", name="Draft plan").click()
    summary = page.locator(".govuk-error-summary")
    assert summary.is_visible() and "minutes" in summary.inner_text()
    assert page.get_by_label("Minutes a session").input_value() == "0"  # the form comes back as typed
    axe(page)
    assert plans_of(platform, child) == []

    # A session of no minutes on an issued plan: the block says so in place, nothing is logged.
    suggested = call(platform, "senco", "GET", "planning", f"/pupils/{child.pupil_id}/suggestion")
    draft = call(platform, "senco", "POST", "planning", "/plans", json={
        "kind": "individual", "pupil_ids": [child.pupil_id], "strand": suggested["strand"],
        "targets": [t["statement_id"] for t in suggested["targets"]][:4],
        "activities": [a["activity"] for a in suggested["activities"]],
        "frequency": {k: suggested["frequency"][k] for k in ("sessions_per_week", "minutes", "setting")},
        "review_on": str(date.today() + timedelta(weeks=6))})
    page.goto(f"{platform.web}/pupils/{child.pupil_id}")
    section = page.locator(f"#plan-{draft['plan_id']}")
    section.get_by_label("Issue as (the named practitioner)").fill("   ")
    section.get_by_role("button", name="Issue plan").click()
    assert page.locator(".govuk-error-summary").is_visible()
    assert plans_of(platform, child)[0]["status"] == "draft"  # not issued
    call(platform, "senco", "POST", "planning", f"/plans/{draft['plan_id']}/issue", json={"practitioner_id": "Priya Shah"})
    page.goto(f"{platform.web}/pupils/{child.pupil_id}")
    block = page.locator(f"#sessions-{draft['plan_id']}")
    block.get_by_label("Minutes").fill("0")
    block.get_by_role("button", name="Log session").click()
    page.locator(f"#sessions-{draft['plan_id']} .govuk-error-summary").wait_for()
    assert "The session was not logged" in page.locator(f"#sessions-{draft['plan_id']}").inner_text()
    axe(page)
    assert call(platform, "senco", "GET", "planning", f"/plans/{draft['plan_id']}/sessions")["items"] == []


def issued_plan(platform: BrowserPlatform, child: Child) -> str:
    suggested = call(platform, "senco", "GET", "planning", f"/pupils/{child.pupil_id}/suggestion")
    draft = call(platform, "senco", "POST", "planning", "/plans", json={
        "kind": "individual", "pupil_ids": [child.pupil_id], "strand": suggested["strand"],
        "targets": [t["statement_id"] for t in suggested["targets"]][:4],
        "activities": [a["activity"] for a in suggested["activities"]],
        "frequency": {k: suggested["frequency"][k] for k in ("sessions_per_week", "minutes", "setting")},
        "review_on": str(date.today() + timedelta(weeks=6))})
    call(platform, "senco", "POST", "planning", f"/plans/{draft['plan_id']}/issue", json={"practitioner_id": "Priya Shah"})
    return str(draft["plan_id"])


def test_a_session_is_logged_without_javascript(platform: BrowserPlatform, browser: Browser) -> None:
    child = a_child(platform)
    plan_id = issued_plan(platform, child)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        signed_in(page, platform, "senco", next_path=f"/pupils/{child.pupil_id}")
        block = page.locator(f"#sessions-{plan_id}")
        block.get_by_label("Minutes").fill("15")
        block.get_by_role("button", name="Log session").click()
        page.wait_for_url(f"{platform.web}/pupils/{child.pupil_id}#plan-{plan_id}")
        assert "Sessions: 1, 15 minutes" in page.locator(f"#totals-{plan_id}").inner_text()
    finally:
        context.close()
    logged = call(platform, "senco", "GET", "planning", f"/plans/{plan_id}/sessions")
    assert [s["minutes"] for s in logged["items"]] == [15]


def test_the_api_decides_who_sees_a_child(platform: BrowserPlatform, page: Page) -> None:
    """Riverside's SENCo cannot reach an Oak Hill child (the API's 403: the no-access page); the DPO
    (no staff role) has no Pupils link and the pupil list refuses them too."""
    child = a_child(platform, assessed=False)
    signed_in(page, platform, "riverside-senco", next_path="/pupils")
    assert child.name not in page.locator("main").inner_text()
    for path in (f"/pupils/{child.pupil_id}", f"/pupils/{child.pupil_id}/report",
                 f"/pupils?academy_id={child.academy_id}&class_id={child.class_id}"):
        response = page.goto(platform.web + path)
        assert response is not None and response.status == 403, path
        assert page.locator("h1").inner_text() == "You do not have access"
    axe(page)
    page.context.clear_cookies()
    signed_in(page, platform, "dpo")
    assert page.get_by_role("link", name="Pupils").count() == 0
    response = page.goto(f"{platform.web}/pupils?academy_id={child.academy_id}&class_id={child.class_id}")
    assert response is not None and response.status == 403
    axe(page)
    response = page.goto(f"{platform.web}/pupils/{child.pupil_id}")  # the assessment API lets the DPO read it
    assert response is not None and response.status == 200 and page.locator("h1").inner_text() == child.name
    page.context.clear_cookies()
    signed_in(page, platform, "senco", next_path=f"/pupils/{child.pupil_id}")
    assert "No completed assessment yet." in page.locator("main").inner_text()
    axe(page)


def test_consent_and_opt_outs_show_where_they_matter(platform: BrowserPlatform, page: Page) -> None:
    """A CAMHS grant shows that the report may be shared with CAMHS; the family's opt-out of the
    online tool shows at the top, and each section the APIs now refuse says why in its place."""
    child = a_child(platform)
    decided = {"given_by": {"name": "A Parent", "relationship": "mother"}, "method": "paper",
               "decided_at": datetime.now(UTC).isoformat()}
    call(platform, "senco", "POST", "consent", f"/pupils/{child.pupil_id}/consents",
         json={"purpose": "share_camhs", "decision": "granted", **decided})
    signed_in(page, platform, "senco", next_path=f"/pupils/{child.pupil_id}")
    camhs = page.get_by_role("row", name="Sharing with CAMHS")
    assert "Yes, consent allows it" in camhs.inner_text()
    assert "No, consent does not allow it" in page.get_by_role("row", name="Sharing with social care").inner_text()

    call(platform, "senco", "POST", "consent", f"/pupils/{child.pupil_id}/consents",
         json={"purpose": "online_processing", "decision": "refused", **decided})

    def refused_in_place() -> bool:  # planning learns of the opt-out from consent's event, on Kafka
        page.reload()
        return page.locator("#suggestion + .govuk-inset-text").count() == 1

    eventually(refused_in_place, what="the suggestion section says the planning API refuses")
    assert page.get_by_role("button", name="Draft plan").count() == 0
    assert "The family opted out of the online tool: nothing new" in page.locator(".govuk-warning-text").inner_text()
    assert "no report is made" in page.locator("#report + .govuk-inset-text").inner_text()
    assert page.get_by_role("link", name="Read the intervention report").count() == 0
    assert "The family opted out" in page.get_by_role("row", name="Processing by the online tool").inner_text()
    axe(page)
