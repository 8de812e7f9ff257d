"""The DPO console in a real browser against the real platform (issue 20, items 1 and 4): a DPO
answers "who shared what with which agency" (table and CSV agree), exports a child's subject-access
file (HTML readable, JSON parses), erases with a confirmation step (a wrong one erases nothing),
verifies the ledger now; what the DPO does in the web is the same API call, audited the same way;
a practitioner or a SENCo sees none of it."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.browser.support import BrowserPlatform, axe, signed_in
from tests.integration.assessment.helpers import SAMPLE, roster_csv, upn
from tests.unit.assessment.report import levels_at

OAK_HILL = "Oak Hill Primary"


class _Agency(BaseHTTPRequestHandler):
    """An agency's webhook endpoint on 127.0.0.1 that accepts every delivery."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("not seen in time")
        time.sleep(0.3)


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


class Data:
    """What this file's tests made through the APIs: new pupils at Oak Hill, two CAMHS agencies,
    one share with each."""

    def __init__(self, platform: BrowserPlatform, endpoint: str) -> None:
        self.platform = platform
        mark = uuid.uuid4().hex[:6]
        self.oak_hill = str(platform.academies[OAK_HILL])
        rows = [f"{upn()},Dposurname{mark}{n},Dpoforename{mark}{n},03/04/2017,{'MF'[n % 2]},4,4D{mark}" for n in range(3)]
        imported = _ok(self.post("assessment", f"/academies/{self.oak_hill}/roster-imports", "senco",
                                 content=roster_csv(rows), headers={"Content-Type": "text/csv"}))
        self.shared, self.erased, self.spare = (str(e["pupil_id"]) for e in imported["enrolled"])
        self.forename = f"Dpoforename{mark}0"
        # The second agency's name is what a spreadsheet would run as a formula (CSV injection).
        self.agency_names = [f"North CAMHS {mark}", f"=South CAMHS {mark}"]
        self.agencies = [str(_ok(self.post("reporting", "/sharing/agencies", "dpo", json={
            "category": "camhs", "organisation": name, "endpoint_url": endpoint}))["agency_id"])
            for name in self.agency_names]
        self.shares = [self._share(agency) for agency in self.agencies]

    def post(self, service: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.platform.headers(user), "Idempotency-Key": str(uuid.uuid4()), **kwargs.pop("headers", {})}
        return httpx.post(self.platform.api(service) + path, headers=headers, timeout=60, **kwargs)

    def get(self, service: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.platform.api(service) + path, headers=self.platform.headers(user), timeout=60, **kwargs)

    def _share(self, agency: str) -> str:
        pupil = self.shared
        if not hasattr(self, "assessment_id"):
            _until(lambda: self.get("consent", f"/pupils/{pupil}/consents", "senco").status_code == 200)
            _ok(self.post("consent", f"/pupils/{pupil}/consents", "senco", json={
                "purpose": "share_camhs", "decision": "granted", "method": "paper",
                "given_by": {"name": "A Parent", "relationship": "mother"}, "decided_at": datetime.now(UTC).isoformat()}))
            started = _ok(self.post("assessment", "/assessments", "senco", json={
                "strands": ["being"], "framework_version": SAMPLE, "pupil_id": pupil}))
            self.assessment_id = started["assessments"][0]["assessment_id"]
            ratings = [{"pupil_id": pupil, "statement_id": s, "level": level.value, "assessment_id": self.assessment_id}
                       for s, level in levels_at(1).items()]
            _ok(self.post("assessment", "/observations/bulk", "senco",
                          json={"observed_at": datetime.now(UTC).isoformat(), "ratings": ratings}))
            _ok(self.post("assessment", f"/assessments/{self.assessment_id}/complete", "senco"))
            _until(lambda: (r := self.get("reporting", f"/pupils/{pupil}/profile", "senco")).status_code == 200
                   and str(r.json().get("latest_assessment_id")) == self.assessment_id)
        shared = _ok(self.post("reporting", "/sharing/shares", "senco", json={
            "agency_id": agency, "pupil_id": pupil, "document_kind": "report", "document_id": self.assessment_id}))
        share_id = str(shared["share_id"])
        _until(lambda: [s for s in self.get("reporting", "/audit/shares", "dpo", params={"pupil_id": pupil})
                        .json()["items"] if s["share_id"] == share_id])
        return share_id


@pytest.fixture(scope="module")
def data(browser_platform: BrowserPlatform) -> Iterator[Data]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Agency)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Data(browser_platform, f"http://127.0.0.1:{server.server_address[1]}/hooks")
    finally:
        server.shutdown()


def _audit_queries(data: Data, query: str) -> list[dict[str, Any]]:
    entries = data.get("reporting", "/audit/entries", "dpo", params={"action": "audit_queried", "limit": 200}).json()
    return [e for e in entries["items"] if e["details"].get("query") == query]


def test_who_shared_what_with_which_agency(platform: BrowserPlatform, page: Page, data: Data) -> None:
    today = date.today().isoformat()
    signed_in(page, platform, "dpo")
    page.get_by_role("link", name="Data protection").first.click()
    page.wait_for_url(f"{platform.web}/dpo")
    page.get_by_role("link", name="Shares with agencies").click()
    page.wait_for_url(f"{platform.web}/dpo/shares")
    page.get_by_label("From (YYYY-MM-DD)").fill(today)
    page.get_by_label("To (YYYY-MM-DD)").fill(today)
    page.get_by_label("Agency", exact=True).select_option(label=data.agency_names[0])
    page.get_by_role("button", name="Show shares").click()
    page.wait_for_url("**/dpo/shares?**")
    rows = page.locator("#shares tbody tr")
    shown = {rows.nth(i).get_attribute("data-share-id") for i in range(rows.count())}
    assert shown == {data.shares[0]}  # the agency filter holds: the other agency's share is not listed
    text = page.locator("#shares").inner_text()
    assert data.agency_names[0] in text and "report" in text and "consent" in text
    axe(page)
    with page.expect_download() as download:
        page.locator("#csv-download").click()
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert [r["share_id"] for r in table] == [data.shares[0]]  # the CSV is the same rows
    assert table[0]["agency_name"] == data.agency_names[0] and len(table[0]["document_sha256"]) == 64
    assert table[0]["document_sha256"][:16] in text  # what was sent, by its hash
    # Without the agency filter both shares are there; a day before the shares, none.
    page.goto(f"{platform.web}/dpo/shares?pupil_id={data.shared}")
    assert {data.shares[0], data.shares[1]} <= set(page.locator("#shares tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.shareId)"))
    page.goto(f"{platform.web}/dpo/shares?pupil_id={data.shared}&to=2020-01-01")
    assert page.locator("#no-shares").is_visible()
    # The proof of one share: the chain to a signed checkpoint.
    page.goto(f"{platform.web}/dpo/shares?pupil_id={data.shared}")
    page.locator(f'tr[data-share-id="{data.shares[0]}"] a', has_text="Proof").click()
    _until(lambda: page.locator("h1").inner_text().startswith("Proof"), 10)
    assert "Signed checkpoint" in page.locator("main").inner_text()
    axe(page)


def test_bad_filters_show_the_apis_problem_and_list_nothing(platform: BrowserPlatform, page: Page, data: Data) -> None:
    signed_in(page, platform, "dpo")
    response = page.goto(f"{platform.web}/dpo/shares?from=2026-05-01&to=2026-04-01")
    assert response is not None and response.status == 400
    assert page.locator(".govuk-error-summary").is_visible() and page.locator("#shares").count() == 0
    assert page.get_by_label("From (YYYY-MM-DD)").input_value() == "2026-05-01"  # the filters are kept
    page.goto(f"{platform.web}/dpo/shares?pupil_id=not-an-id")
    assert page.locator(".govuk-error-summary").is_visible()
    axe(page)


def test_the_web_is_the_same_audited_api_call(platform: BrowserPlatform, page: Page, data: Data) -> None:
    """The CSV downloaded from the web is recorded in the ledger as the API's own `shares.csv` query,
    with the DPO as the actor and the filters the DPO chose; a cell a spreadsheet would run as a
    formula is prefixed with an apostrophe."""
    signed_in(page, platform, "dpo")
    before = len(_audit_queries(data, "shares.csv"))
    page.goto(f"{platform.web}/dpo/shares?agency_id={data.agencies[1]}")
    assert data.agency_names[1] in page.locator("#shares").inner_text()  # shown as text, never run
    with page.expect_download() as download:
        page.locator("#csv-download").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert [r["agency_name"] for r in rows] == ["'" + data.agency_names[1]]  # the formula is defused
    after = _until(lambda: (found := _audit_queries(data, "shares.csv")) and len(found) > before and found)
    newest = max(after, key=lambda e: e["seq"])
    assert newest["details"].get("filter.agency_id") == data.agencies[1]
    from flourish.local.oidc import USERS_BY_KEY
    assert newest["actor"] == USERS_BY_KEY["dpo"].subject


def test_subject_access_export(platform: BrowserPlatform, page: Page, data: Data) -> None:
    signed_in(page, platform, "dpo", next_path="/dpo/pupils")
    page.get_by_label("The child's Flourish id").fill(data.shared)
    page.get_by_role("button", name="Open the record").click()
    page.wait_for_url(f"{platform.web}/dpo/pupils/{data.shared}")
    assert "share camhs" in page.locator("#consent-history").inner_text()
    axe(page)
    page.get_by_role("link", name="Subject-access export (read it here)").click()
    page.wait_for_url(f"**/dpo/pupils/{data.shared}/subject-access")
    assert data.forename in page.locator("#subject-access").inner_text()  # what is held, readable
    axe(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download this export (JSON)").click()
    document = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert data.forename in json.dumps(document) and data.shared in json.dumps(document)
    # Reading the export was an audited read, the same as the API's: the child's reads list it.
    page.goto(f"{platform.web}/dpo/pupils/{data.shared}")
    assert "subject access export" in page.locator("#reads").inner_text()
    # A consent receipt, from the history.
    page.locator("#consent-history a", has_text="Receipt").first.click()
    assert "A Parent" in page.locator("#receipt").inner_text()
    axe(page)


def test_erasure_needs_its_confirmation(platform: BrowserPlatform, page: Page, data: Data) -> None:
    signed_in(page, platform, "dpo", next_path=f"/dpo/pupils/{data.erased}")
    page.get_by_role("link", name="Erase this child's data").click()
    page.wait_for_url(f"{platform.web}/dpo/pupils/{data.erased}/erasure")
    axe(page)
    page.get_by_label("The family asked for erasure (right to erasure)").check()
    page.get_by_label("To confirm, type the child's reference").fill("WRONG123")
    page.get_by_role("button", name="Erase the child's data").click()
    page.locator(".govuk-error-summary").wait_for()
    assert "Type the child's reference" in page.locator(".govuk-error-summary").inner_text()
    axe(page)
    # Nothing was erased: the consent service has no erasure record and the export still answers.
    assert data.get("consent", f"/pupils/{data.erased}/erasure", "dpo").status_code == 404
    assert data.get("consent", f"/pupils/{data.erased}/subject-access", "dpo",
                    params={"include_services": "false"}).status_code == 200
    page.get_by_label("To confirm, type the child's reference").fill(data.erased[:8].lower())
    page.get_by_role("button", name="Erase the child's data").click()
    page.wait_for_url(f"{platform.web}/dpo/pupils/{data.erased}")
    record = page.locator("#erasure-record").inner_text()
    assert "right to erasure" in record
    erasure = _ok(data.get("consent", f"/pupils/{data.erased}/erasure", "dpo"))
    from flourish.local.oidc import USERS_BY_KEY
    assert erasure["requested_by"] == USERS_BY_KEY["dpo"].subject  # the DPO's own call, as from the API
    assert data.get("consent", f"/pupils/{data.erased}/subject-access", "dpo").status_code == 410
    axe(page)


def test_verify_now_shows_the_ledger_intact(platform: BrowserPlatform, page: Page, data: Data) -> None:
    signed_in(page, platform, "dpo", next_path="/dpo")
    assert "Reachable" in page.locator("#ledger-status").inner_text()
    axe(page)
    page.get_by_role("button", name="Verify now").click()
    page.wait_for_url(f"{platform.web}/dpo/ledger/verification")
    assert page.locator("#verification-result").inner_text() == "The ledger is intact"
    assert "Intact" in page.locator("#ledger-status").inner_text()
    axe(page)
    assert _until(lambda: [e for e in _audit_queries(data, "verification")
                           if e["details"].get("filter.outcome") == "intact"])


def test_retention(platform: BrowserPlatform, page: Page, data: Data) -> None:
    signed_in(page, platform, "dpo", next_path="/dpo/retention")
    assert page.locator("#policies tbody tr").count() > 0
    axe(page)
    page.get_by_label("What expires in the next (days)").fill("-3")
    page.get_by_role("button", name="Show").click()
    page.locator(".govuk-error-summary").wait_for()


@pytest.mark.parametrize("user", ["teacher", "senco"])
def test_practitioners_see_none_of_it(platform: BrowserPlatform, page: Page, context: BrowserContext,
                                      data: Data, user: str) -> None:
    signed_in(page, platform, user)
    assert page.get_by_role("link", name="Data protection").count() == 0
    for path in ("/dpo", "/dpo/shares", "/dpo/shares.csv", f"/dpo/pupils/{data.shared}",
                 f"/dpo/pupils/{data.shared}/subject-access", f"/dpo/pupils/{data.shared}/subject-access.json",
                 f"/dpo/pupils/{data.spare}/erasure", f"/dpo/shares/{data.shares[0]}/proof"):
        response = context.request.get(platform.web + path)
        assert response.status == 403, (user, path, response.status)
        assert "You do not have access" in response.text()
    page.goto(platform.web + "/dpo/shares")
    axe(page)
    # Nor can they erase by posting the form: the API refuses, nothing is erased.
    page.goto(platform.web + "/")
    token = page.locator('input[name="csrf_token"]').first.input_value()
    response = context.request.post(f"{platform.web}/dpo/pupils/{data.spare}/erasure", form={
        "csrf_token": token, "idempotency_key": str(uuid.uuid4()), "reason": "right_to_erasure",
        "confirmation": data.spare[:8]})
    assert response.status == 403
    assert data.get("consent", f"/pupils/{data.spare}/erasure", "dpo").status_code == 404
