"""Trust administration and the operations page in a real browser against the real platform (issue
20, items 2-4): a roster file with a bad row is refused whole with its per-row report and nothing of
it applied; an agency registered, its secret shown once, rotated, deactivated, each action in the
audit ledger as the API records it; the dashboards show exactly what the API publishes (its
suppressed `c` cells included); framework versions; the operations page for operators only; a
practitioner, a DPO and the trust's central team see none of the screens not theirs (no links, and
the URL gives the no-access page); axe clean on every page."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser.support import BrowserPlatform, axe, signed_in

HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group"
ADMIN_PATHS = ("/admin/academies", "/admin/dashboard", "/admin/agencies", "/admin/frameworks")


def upn() -> str:
    return "A" + uuid.uuid4().int.__str__()[:12]


def roster(*rows: str) -> bytes:
    return ("\r\n".join([HEADER, *rows]) + "\r\n").encode()


def get(platform: BrowserPlatform, user: str, service: str, path: str, **params: Any) -> Any:
    response = httpx.get(platform.api(service) + path, headers=platform.headers(user), params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def new_academy(platform: BrowserPlatform, page: Page, name: str) -> str:
    """Registered through the academies page, as the central team would."""
    academy_id = str(uuid.uuid4())
    signed_in(page, platform, "trust-admin", next_path="/admin/academies")
    page.fill("#academy_id", academy_id)
    page.fill("#name", name)
    page.get_by_role("button", name="Save academy").click()
    page.wait_for_url(platform.web + "/admin/academies")
    assert name in page.locator("#main-content, main").first.inner_text()
    return academy_id


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def agency_endpoint() -> Iterator[str]:
    """An agency's webhook endpoint on 127.0.0.1 (the browser platform allows it): answers 204."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/flourish"
    finally:
        server.shutdown()
        server.server_close()


def test_a_roster_file_with_a_bad_row_is_refused_whole(platform: BrowserPlatform, page: Page) -> None:
    academy_id = new_academy(platform, page, f"Admin Test Academy {uuid.uuid4().hex[:6]}")
    axe(page)
    page.goto(f"{platform.web}/admin/academies/{academy_id}/roster-import")
    axe(page)
    bad = roster(f"{upn()},Smith,Ada,03/04/2017,F,4,4B", f"{upn()},Jones,Ben,31/02/2017,M,4,4C")
    page.set_input_files("#file", files=[{"name": "export.csv", "mimeType": "text/csv", "buffer": bad}])
    page.get_by_role("button", name="Import the file").click()
    page.wait_for_load_state()
    summary = page.locator(".govuk-error-summary").inner_text()
    assert "nothing was imported" in summary
    problems = page.locator("#roster-problems tbody tr").all_inner_texts()
    assert problems and all(p.startswith("3") for p in problems), problems  # the bad pupil's row (row 3)
    assert "31/02/2017" not in page.content()  # the report never quotes the value
    axe(page)
    # Nothing of the file was applied: the good row's pupil and class 4B do not exist.
    assert get(platform, "trust-admin", "assessment", f"/academies/{academy_id}/classes")["items"] == []

    good = roster(f"{upn()},Smith,Ada,03/04/2017,F,4,4B", f"{upn()},Jones,Ben,28/02/2017,M,4,4C")
    page.set_input_files("#file", files=[{"name": "export.csv", "mimeType": "text/csv", "buffer": good}])
    page.get_by_role("button", name="Import the file").click()
    page.wait_for_selector("#roster-report")
    report = page.locator("#roster-report").inner_text()
    assert "New pupils\n2" in report.replace("\t", "\n") or "New pupils 2" in report, report
    assert sorted(c["name"] for c in get(platform, "trust-admin", "assessment",
                                          f"/academies/{academy_id}/classes")["items"]) == ["4B", "4C"]
    axe(page)


def _audited(platform: BrowserPlatform, action: str, agency_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        entries = get(platform, "dpo", "reporting", "/audit/entries", action=action, limit=200)["items"]
        found = [e for e in entries if agency_id in str(e)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_register_rotate_and_deactivate_an_agency(platform: BrowserPlatform, page: Page, agency_endpoint: str) -> None:
    signed_in(page, platform, "trust-admin", next_path="/admin/agencies")
    axe(page)
    before = get(platform, "trust-admin", "reporting", "/sharing/agencies")["items"]

    # Bad input: an endpoint that is not a URL the API accepts: its problem shown, nothing registered.
    page.check("#category-camhs")
    page.fill("#organisation", "Admin Test CAMHS")
    page.fill("#endpoint_url", "ftp://agency.example/hook")
    page.get_by_role("button", name="Register the agency").click()
    page.wait_for_selector(".govuk-error-summary")
    assert "https" in page.locator(".govuk-error-summary").inner_text()
    assert page.locator("#organisation").input_value() == "Admin Test CAMHS"  # the form kept what was typed
    axe(page)
    assert get(platform, "trust-admin", "reporting", "/sharing/agencies")["items"] == before

    organisation = f"Admin Test CAMHS {uuid.uuid4().hex[:6]}"
    page.fill("#organisation", organisation)
    page.fill("#endpoint_url", agency_endpoint)
    page.get_by_role("button", name="Register the agency").click()
    page.wait_for_selector("#signing-secret")
    first_secret = page.locator("#signing-secret").inner_text()
    assert first_secret.startswith("whsec_"), first_secret
    assert "verified" in page.locator("#verification").inner_text()
    axe(page)
    agency = next(a for a in get(platform, "trust-admin", "reporting", "/sharing/agencies")["items"]
                  if a["organisation"] == organisation)
    assert agency["verified"] and agency["active"]
    agency_id = agency["agency_id"]

    # The secret is shown once: the agency's page (and the list) never carry it.
    page.get_by_role("link", name="Go to the agency").click()
    page.wait_for_url(f"{platform.web}/admin/agencies/{agency_id}")
    assert first_secret not in page.content()
    axe(page)

    page.get_by_role("button", name="Rotate the signing secret").click()
    page.wait_for_selector("#signing-secret")
    second_secret = page.locator("#signing-secret").inner_text()
    assert second_secret.startswith("whsec_") and second_secret != first_secret
    page.goto(f"{platform.web}/admin/agencies/{agency_id}")
    assert second_secret not in page.content()

    # Deactivating asks for confirmation: without it nothing changes.
    page.get_by_role("button", name="Deactivate the agency").click()
    page.wait_for_selector(".govuk-error-summary")
    assert "nothing was changed" in page.locator(".govuk-error-summary").inner_text()
    assert page.locator("#agency-status").inner_text() == "Verified"
    axe(page)
    page.check("#confirm")
    page.get_by_role("button", name="Deactivate the agency").click()
    page.wait_for_selector("#notice")
    assert page.locator("#agency-status").inner_text() == "Deactivated"
    assert not next(a for a in get(platform, "trust-admin", "reporting", "/sharing/agencies")["items"]
                    if a["agency_id"] == agency_id)["active"]

    # Each action is the API's, audited as the API records it: the trust-admin's, naming the agency.
    from flourish.local.oidc import USERS_BY_KEY

    admin = USERS_BY_KEY["trust-admin"]
    for action in ("agency.registered", "agency.secret_rotated", "agency.deactivated"):
        entries = _audited(platform, action, agency_id)
        assert len(entries) == 1, (action, entries)
        assert entries[0]["kind"] == "admin" and entries[0]["actor"] == admin.subject, entries[0]
        assert first_secret not in str(entries[0]) and second_secret not in str(entries[0])


def test_dashboards_show_what_the_api_publishes(platform: BrowserPlatform, page: Page) -> None:
    published = get(platform, "trust-admin", "reporting", "/trust/dashboard")
    signed_in(page, platform, "trust-admin", next_path="/admin/dashboard")
    axe(page)
    names = {a["academy_id"]: a["name"]
             for a in get(platform, "trust-admin", "assessment", "/academies", limit=200)["items"]}
    rows = page.locator("#trust-dashboard tbody tr").all()
    assert len(rows) == len(published["academies"]) + 1
    for row, academy in zip(rows, published["academies"], strict=False):
        cells = row.locator("td").all_inner_texts()
        assert row.locator("th").inner_text() == names.get(academy["academy_id"], academy["academy_id"])
        assert cells == [str(academy["working_at"][s]) for s in published["strands"]] + [str(academy["total"])]
    totals = rows[-1].locator("td").all_inner_texts()
    assert totals == [str(published["totals"][s]) for s in published["strands"]] + [str(published["total"])]
    # A suppressed cell is drawn as no bar: the charts' bars are the API's numbers only.
    drawn = page.locator("svg.flourish-chart rect").count()
    numbers = sum(1 for a in published["academies"] for v in a["working_at"].values() if isinstance(v, int))
    numbers += sum(1 for v in published["totals"].values() if isinstance(v, int))
    assert drawn == numbers

    academy_id = str(platform.academies[next(iter(platform.academies))])
    exact = get(platform, "trust-admin", "reporting", f"/academies/{academy_id}/dashboard")
    page.goto(f"{platform.web}/admin/academies/{academy_id}/dashboard")
    text = page.locator("#academy-dashboard").inner_text()
    assert str(exact["children"]) in text and str(exact["assessed"]) in text
    axe(page)


def test_framework_versions(platform: BrowserPlatform, page: Page) -> None:
    listed = get(platform, "trust-admin", "assessment", "/frameworks")["items"]
    signed_in(page, platform, "trust-admin", next_path="/admin/frameworks")
    axe(page)
    versions = page.locator("#frameworks tbody th").all_inner_texts()
    assert versions == [f["version"] for f in listed]
    page.get_by_role("link", name=listed[0]["version"]).click()
    page.wait_for_url(f"{platform.web}/admin/frameworks/{listed[0]['version']}")
    assert page.locator("h1").inner_text() == listed[0]["name"]
    axe(page)
    # A document that is not a framework: the API's problem on the page, nothing loaded.
    page.goto(f"{platform.web}/admin/frameworks")
    page.set_input_files("#file", files=[{"name": "f.yaml", "mimeType": "application/yaml",
                                          "buffer": b"version: not-a-framework\n"}])
    page.get_by_role("button", name="Load the version").click()
    page.wait_for_selector(".govuk-error-summary")
    axe(page)
    assert get(platform, "trust-admin", "assessment", "/frameworks")["items"] == listed


def test_the_operations_page_is_for_operators(platform: BrowserPlatform, page: Page) -> None:
    signed_in(page, platform, "operator", next_path="/operations")
    rows = page.locator("#ops tbody th").all_inner_texts()
    assert sorted(rows) == ["assessment", "consent", "planning", "reporting"]
    assert "Flourish — APIs" in page.locator("#dashboards").inner_text()
    axe(page)
    page.goto(platform.web + "/")
    assert page.get_by_role("link", name="Operations").count() >= 1


@pytest.mark.parametrize("user", ["teacher", "dpo"])
def test_others_see_none_of_the_admin_screens(platform: BrowserPlatform, page: Page, user: str) -> None:
    signed_in(page, platform, user)
    nav = page.locator("body").inner_text()
    for label in ("Academies", "Trust dashboard", "Agencies", "Framework versions", "Operations"):
        assert page.get_by_role("link", name=label, exact=True).count() == 0, (user, label, nav)
    academy_id = str(platform.academies[next(iter(platform.academies))])
    for path in (*ADMIN_PATHS, f"/admin/academies/{academy_id}/roster-import",
                 f"/admin/academies/{academy_id}/dashboard", "/operations"):
        response = page.goto(platform.web + path)
        assert response is not None and response.status == 403, (user, path)
        assert page.locator("h1").inner_text() == "You do not have access"
    axe(page)


def test_the_central_team_does_not_reach_the_operations_page(platform: BrowserPlatform, page: Page) -> None:
    signed_in(page, platform, "trust-admin")
    assert page.get_by_role("link", name="Operations", exact=True).count() == 0
    response = page.goto(platform.web + "/operations")
    assert response is not None and response.status == 403
