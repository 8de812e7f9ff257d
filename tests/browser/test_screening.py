"""The screening grid and the class profile in a real browser against the real platform: rating by
keyboard with JavaScript (saved as you go, there after a reload, a cell changed back is the newest),
the same grid without JavaScript as one form, a double submit applied once, bad input refused with
nothing changed, completing shows the class profile, and who may open it is the API's answer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.browser.support import BrowserPlatform, axe, signed_in

OAK_HILL = "Oak Hill Primary"


def _api(platform: BrowserPlatform, user: str, method: str, path: str, **kwargs: Any) -> Any:
    headers = {**platform.headers(user), **({"Idempotency-Key": str(uuid.uuid4())} if method == "POST" else {})}
    response = httpx.request(method, platform.api("assessment") + path, headers=headers, timeout=30, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def _screening(platform: BrowserPlatform, pupils: int = 2) -> dict[str, Any]:
    """A group of the first Oak Hill pupils of the demo class, and a Being screening of it (made as
    the senco through the API, so each test has its own)."""
    academy = platform.academies[OAK_HILL]
    class_id = _api(platform, "senco", "GET", f"/academies/{academy}/classes")["items"][0]["class_id"]
    roll = _api(platform, "senco", "GET", f"/classes/{class_id}/pupils")["items"][:pupils]
    group = _api(platform, "senco", "POST", f"/academies/{academy}/groups",
                 json={"name": f"Screen {uuid.uuid4().hex[:6]}", "pupil_ids": [p["pupil_id"] for p in roll]})
    started = _api(platform, "senco", "POST", "/assessments",
                   json={"group_id": group["group_id"], "framework_version": "flourish-sample-1", "strands": ["being"]})
    return {"group": group, "screening_id": started["screening_id"], "assessments": started["assessments"]}


def _ratings(platform: BrowserPlatform, assessment: dict[str, Any]) -> list[dict[str, Any]]:
    items = _api(platform, "senco", "GET", f"/pupils/{assessment['pupil_id']}/observations",
                 params={"limit": 200})["items"]
    return [o for o in items if o["assessment_id"] == assessment["assessment_id"]]


def _first_row_assessment(page: Page, started: dict[str, Any]) -> dict[str, Any]:
    name = page.locator("select.flourish-grid__select").first.get_attribute("name") or ""
    return next(a for a in started["assessments"] if a["assessment_id"] == name.split("|")[1])


def _saved(page: Page, index: int, level: str) -> None:
    """Wait for cell `index`'s status to say it saved `level` (htmx swaps it in)."""
    page.wait_for_function("([i, text]) => document.querySelectorAll('.flourish-cell__status')[i]"
                           ".textContent.trim() === text", arg=[index, f"Saved: {level}"])


@pytest.fixture
def no_js(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(java_script_enabled=False)
    yield ctx.new_page()
    ctx.close()


def test_choose_start_and_save_as_you_go_by_keyboard(platform: BrowserPlatform, page: Page) -> None:
    made = _screening(platform)  # the group to choose on the page
    signed_in(page, platform, "senco", "/screening")
    axe(page)
    page.get_by_label(re.compile(f"Group {made['group']['name']}")).check()
    page.get_by_role("button", name="Continue").click()
    axe(page)
    page.get_by_role("button", name="Start screening").click()
    page.wait_for_url(re.compile(r".*/screening/[0-9a-f-]{36}$"))
    screening_id = page.url.rsplit("/", 1)[1]
    started = _api(platform, "senco", "GET", f"/screenings/{screening_id}")
    assert len(started["assessments"]) == 2
    selects = page.locator("select.flourish-grid__select")
    assert selects.count() == 2 * 45
    axe(page)
    # By keyboard: focus the first cell, type a level's first letter, Tab to the next statement.
    selects.nth(0).focus()
    for letter in ("s", "e", "d"):
        page.keyboard.press(letter)
        page.keyboard.press("Tab")
    for i, level in enumerate(("Secure", "Emerging", "Developing")):
        _saved(page, i, level)
    assert page.evaluate("document.activeElement.name") == selects.nth(3).get_attribute("name")  # focus kept
    # Changing a cell back to an earlier level is a new rating (not a replay of the first one).
    selects.nth(0).select_option("rarely")
    _saved(page, 0, "Rarely")
    selects.nth(0).select_option("secure")
    _saved(page, 0, "Secure")
    page.reload()
    assert [selects.nth(i).input_value() for i in range(4)] == ["secure", "emerging", "developing", ""]
    assessment = _first_row_assessment(page, {"assessments": started["assessments"]})
    ratings = _ratings(platform, assessment)
    assert len(ratings) == 5 and ratings[0]["level"] == "secure"  # newest first
    axe(page)


def test_without_javascript_the_grid_is_a_form_and_a_double_submit_is_applied_once(
        platform: BrowserPlatform, no_js: Page) -> None:
    made = _screening(platform)
    page = signed_in(no_js, platform, "senco", f"/screening/{made['screening_id']}")
    selects = page.locator("select.flourish-grid__select")
    selects.nth(0).select_option("developing")
    selects.nth(1).select_option("secure")
    page.get_by_role("button", name="Save ratings").click()
    assert "2 ratings saved" in page.locator("main").inner_text()
    page.goto(page.url.split("?")[0])
    assert [selects.nth(i).input_value() for i in range(3)] == ["developing", "secure", ""]
    assessment = _first_row_assessment(page, made)
    assert len(_ratings(platform, assessment)) == 2
    # The same rendered form sent twice (a double click): one bulk request applied once.
    selects.nth(2).select_option("emerging")
    fields = page.locator("form[action^='/screening/'] input, form[action^='/screening/'] select").all()
    form = {el.get_attribute("name") or "": el.input_value() for el in fields}
    form["action"] = "save"
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    url = page.url.split("?")[0]

    codes = [httpx.post(url, data=form, cookies=cookies, timeout=30).status_code for _ in range(2)]
    assert codes == [303, 303], codes
    ratings = _ratings(platform, assessment)
    assert len(ratings) == 3 and sum(1 for o in ratings if o["level"] == "emerging") == 1


def test_bad_input_is_refused_and_nothing_changes(platform: BrowserPlatform, page: Page, no_js: Page) -> None:
    made = _screening(platform)
    screening = f"/screening/{made['screening_id']}"
    # With JavaScript: a tampered cell's level is refused on that cell; nothing recorded.
    signed_in(page, platform, "senco", screening)
    page.evaluate("""() => { const s = document.querySelector('select.flourish-grid__select');
        s.add(new Option('Awful', 'awful')); }""")
    page.locator("select.flourish-grid__select").first.select_option("awful")
    status = page.locator(".flourish-cell__status").first
    status.filter(has_text="Not saved").wait_for()
    assert page.locator(".flourish-grid__cell:has(.flourish-cell__status--error)").count() == 1
    assessment = _first_row_assessment(page, made)
    assert _ratings(platform, assessment) == []
    # Without JavaScript: completing with statements unrated shows the API's problem; nothing completed.
    no_js_page = signed_in(no_js, platform, "senco", screening)
    no_js_page.locator("select.flourish-grid__select").first.select_option("secure")
    no_js_page.get_by_role("button", name="Complete screening").click()
    summary = no_js_page.locator(".govuk-error-summary")
    assert summary.count() == 1 and summary.inner_text().strip()
    assert not any(a["completed"] for a in _api(platform, "senco", "GET", f"/screenings/{made['screening_id']}")["assessments"])
    # A forged level in the posted form: the error summary, nothing recorded.
    response = no_js.context.request.post(
        platform.web + screening,
        form={"csrf_token": no_js_page.locator("input[name=csrf_token]").first.input_value(),
              "idempotency_key": str(uuid.uuid4()), "observed_at": datetime.now(UTC).isoformat(), "action": "save",
              f"{assessment['pupil_id']}|{assessment['assessment_id']}|being.2": "awful"})
    assert response.status == 422 and "choose Rarely, Emerging, Developing or Secure" in response.text()
    assert [o["statement_id"] for o in _ratings(platform, assessment)] == ["being.1"]


def test_completing_shows_the_class_profile(platform: BrowserPlatform, no_js: Page, page: Page) -> None:
    made = _screening(platform)
    statements = [f"being.{n}" for n in range(1, 46)]
    # All but one cell through the API; the last one on the page.
    ratings = [{"pupil_id": a["pupil_id"], "assessment_id": a["assessment_id"], "statement_id": s,
                "level": "rarely" if i == 0 else "secure"}
               for i, a in enumerate(made["assessments"]) for s in statements]
    last = ratings.pop()
    _api(platform, "senco", "POST", "/observations/bulk",
         json={"observed_at": datetime.now(UTC).isoformat(), "ratings": ratings})
    js_page, page = page, signed_in(no_js, platform, "senco", f"/screening/{made['screening_id']}")
    page.locator(f'select[name="{last["pupil_id"]}|{last["assessment_id"]}|{last["statement_id"]}"]').select_option("secure")
    page.get_by_role("button", name="Complete screening").click()
    page.wait_for_url(re.compile(r".*/profile$"))
    assert page.locator("h1").inner_text() == "Class profile"
    assert page.locator("#children tbody tr").count() == 2
    assert page.locator("svg.flourish-chart").count() >= 2 and page.locator("table.flourish-chart-table").count() >= 2
    assert all(a["completed"] for a in _api(platform, "senco", "GET", f"/screenings/{made['screening_id']}")["assessments"])
    page.goto(platform.web + f"/screening/{made['screening_id']}")
    assert "This screening is complete" in page.locator("main").inner_text()
    signed_in(js_page, platform, "senco", f"/screening/{made['screening_id']}/profile")
    axe(js_page)  # axe runs as a script: in a context with JavaScript on


def test_who_may_open_it_is_the_apis_answer(platform: BrowserPlatform, page: Page, context: BrowserContext) -> None:
    made = _screening(platform)
    signed_in(page, platform, "teacher")
    assert page.get_by_role("link", name="Screening").count() >= 1
    context.clear_cookies()
    for user in ("dpo", "riverside-senco"):
        signed_in(page, platform, user)
        if user == "dpo":
            assert page.locator("nav").get_by_role("link", name="Screening").count() == 0
            page.goto(platform.web + "/screening")
            assert page.locator("h1").inner_text() == "You do not have access"
        for path in (f"/screening/{made['screening_id']}", f"/screening/{made['screening_id']}/profile"):
            response = page.goto(platform.web + path)
            assert response is not None and response.status in (403, 404), (user, path)
            assert page.locator("h1").inner_text() in ("You do not have access", "Page not found")
        axe(page)
        context.clear_cookies()
