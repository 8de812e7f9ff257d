"""Consent and sharing in a real browser against the real platform (issue 19, item 4): a SENCo
records a parent's decision and prints its receipt, shares a report with an agency after seeing the
consent decision, and follows the delivery; a withdrawal stops a share already on screen; a class
teacher reaches neither action (no button, and the API's 403 when typing the URL or forging the
form); a double submit is applied once; bad input changes nothing.

Each test makes its own child (a roster import into a class of its own, "4S") and the module its
own agency, whose webhook endpoint is a receiver on 127.0.0.1 answering 204."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.browser.support import BrowserPlatform, axe, signed_in
from tests.unit.assessment.report import levels_at

OAK_HILL = "Oak Hill Primary"
PARENT = "Marguerite Fenwick-Oyelaran"


class Hooks(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        verification = b'"endpoint.verification"' in body
        if not verification:
            Hooks.received.append(json.loads(body))
        # An endpoint under /failing answers its verification, then fails every delivery.
        self.send_response(500 if self.path.startswith("/failing") and not verification else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def register(platform: BrowserPlatform, name: str, endpoint_url: str) -> dict[str, Any]:
    """A CAMHS team registered by the trust's central team; its endpoint answers the verification."""
    response = httpx.post(platform.api("reporting") + "/sharing/agencies", headers=platform.headers("trust-admin"),
                          json={"category": "camhs", "organisation": f"{name} {uuid.uuid4().hex[:6]}",
                                "endpoint_url": endpoint_url}, timeout=30)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["verified"], body
    return body


@pytest.fixture(scope="module")
def agency(browser_platform: BrowserPlatform, receiver: str) -> dict[str, Any]:
    return register(browser_platform, "North CAMHS", receiver + "/hooks")


def eventually(check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def get(platform: BrowserPlatform, service: str, path: str, user: str = "senco", **params: Any) -> httpx.Response:
    return httpx.get(platform.api(service) + path, headers=platform.headers(user), params=params, timeout=30)


def post(platform: BrowserPlatform, service: str, path: str, body: Any = None, user: str = "senco", *,
         content: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    """A command for the test's own data, retried (same Idempotency-Key) while the API answers 503
    "try again later": a shared machine under load can keep a peer from answering in time."""
    sent = {**platform.headers(user), "Idempotency-Key": str(uuid.uuid4()), **(headers or {})}
    deadline = time.monotonic() + 90
    while True:
        response = httpx.post(platform.api(service) + path, json=body if content is None else None, content=content,
                              timeout=30, headers=sent)
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert response.status_code in (200, 201), response.text
    return response.json()


class Children:
    """The module's children, made at once (one roster import, then one wait for Kafka to carry
    them to the consent and reporting services); each test takes its own and changes only it."""

    def __init__(self, platform: BrowserPlatform, *, assessed: int, plain: int) -> None:
        academy = platform.academies[OAK_HILL]
        rows = [f"S{random.randrange(10**10, 10**11)}7,Sharewell,Tamsin,04/05/2017,F,4,4S"
                for _ in range(assessed + plain)]
        csv = ("UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group\r\n" + "\r\n".join(rows) + "\r\n").encode()
        imported = post(platform, "assessment", f"/academies/{academy}/roster-imports", content=csv,
                        headers={"Content-Type": "text/csv"})
        pupils = [uuid.UUID(str(entry["pupil_id"])) for entry in imported["enrolled"]]
        self.plain: list[tuple[uuid.UUID, str | None]] = [(pupil_id, None) for pupil_id in pupils[assessed:]]
        self.assessed: list[tuple[uuid.UUID, str | None]] = []
        for pupil_id in pupils[:assessed]:
            started = post(platform, "assessment", "/assessments", {
                "pupil_id": str(pupil_id), "strands": ["being"], "framework_version": "flourish-sample-1"})
            assessment_id = started["assessments"][0]["assessment_id"]
            post(platform, "assessment", "/observations/bulk", {"observed_at": datetime.now(UTC).isoformat(), "ratings": [
                {"pupil_id": str(pupil_id), "statement_id": s, "level": level.value, "assessment_id": assessment_id}
                for s, level in levels_at(1).items()]})
            post(platform, "assessment", f"/assessments/{assessment_id}/complete")
            self.assessed.append((pupil_id, assessment_id))
        for pupil_id in pupils:
            eventually(lambda p=pupil_id: get(platform, "consent", f"/pupils/{p}/consents").status_code == 200)
        for pupil_id, assessment_id in self.assessed:
            eventually(lambda p=pupil_id, a=assessment_id: a in get(platform, "reporting", f"/pupils/{p}/profile").text)


@pytest.fixture(scope="module")
def children(browser_platform: BrowserPlatform) -> Children:
    return Children(browser_platform, assessed=4, plain=3)


def new_child(children: Children, *, assessed: bool = False) -> tuple[uuid.UUID, str | None]:
    """A child no other test touches: in Oak Hill (class 4S), known to the consent service;
    `assessed`: with a completed assessment the reporting service's read models hold."""
    return (children.assessed if assessed else children.plain).pop()


def consent_body(purpose: str, decision: str = "granted") -> dict[str, Any]:
    return {"purpose": purpose, "decision": decision, "given_by": {"name": PARENT, "relationship": "mother"},
            "method": "paper", "decided_at": datetime.now(UTC).isoformat()}


def history(platform: BrowserPlatform, pupil_id: uuid.UUID) -> list[dict[str, Any]]:
    response = get(platform, "consent", f"/pupils/{pupil_id}/consents/history")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def deliveries_of(platform: BrowserPlatform, agency: dict[str, Any], pupil_id: uuid.UUID) -> list[dict[str, Any]]:
    """The agency's delivery log (every try) read through the sharing API, for this child's shares."""
    response = get(platform, "reporting", f"/sharing/agencies/{agency['agency_id']}/deliveries", limit=200)
    assert response.status_code == 200, response.text
    ours = []
    for delivery_id in dict.fromkeys(attempt["delivery_id"] for attempt in response.json()["items"]):
        delivery = get(platform, "reporting", f"/sharing/deliveries/{delivery_id}").json()
        if delivery.get("pupil_id") == str(pupil_id):
            ours.append(delivery)
    return ours


def record_in_browser(page: Page, purpose: str, decision: str, name: str = PARENT) -> None:
    form = page.locator("#record-form")
    form.get_by_label("What the decision is about").select_option(purpose)
    form.locator(f"#decision-{decision}").check()
    form.get_by_label("Name of the parent or carer").fill(name)
    form.get_by_label("Relationship to the child").fill("mother")
    form.locator("#method-paper").check()
    form.get_by_label("Where the evidence is filed (optional)").fill("signed form, SEND office file")
    form.get_by_role("button", name="Record the decision").click()


def test_record_consent_then_share_and_follow_the_delivery(platform: BrowserPlatform, children: Children, page: Page,
                                                           agency: dict[str, Any]) -> None:
    pupil_id, assessment_id = new_child(children, assessed=True)
    signed_in(page, platform, "senco", next_path=f"/pupils/{pupil_id}/consent")
    assert page.locator("h1").inner_text() == "Consent for Tamsin Sharewell"
    axe(page)
    record_in_browser(page, "share_camhs", "granted")
    page.wait_for_url(re.compile(r".*/consent-decisions/.*/receipt\?recorded=1"))
    receipt = page.locator("#receipt").inner_text()
    assert "Granted" in receipt and PARENT in receipt and "CAMHS" in receipt
    axe(page)
    page.get_by_role("link", name="Back to the child's consent").click()
    camhs = page.locator('#consent-status tr[data-purpose="share_camhs"]').inner_text()
    assert "Granted" in camhs and "Intervention report" in camhs
    assert page.locator("#consent-history tbody tr").count() == 1

    page.locator("#share-link").click()
    page.get_by_label("Agency").select_option(agency["agency_id"])
    page.get_by_label("Document").select_option(f"report:{assessment_id}")
    page.get_by_role("button", name="Check consent").click()
    decision = page.locator("#consent-decision").inner_text()
    assert "Allowed" in decision and "consent" in decision
    axe(page)
    page.get_by_role("button", name=f"Send to {agency['organisation']}").click()
    page.wait_for_url(re.compile(rf".*/pupils/{pupil_id}/shares/.*"))
    axe(page)

    def delivered() -> bool:
        page.reload()
        return page.locator("#delivery-status").get_attribute("data-status") == "delivered"

    eventually(delivered, timeout=60)
    assert page.locator("#delivery-status").inner_text() == "Delivered"
    assert [d["status"] for d in deliveries_of(platform, agency, pupil_id)] == ["delivered"]
    assert [h for h in Hooks.received if h.get("data", h).get("pupil_id") == str(pupil_id)
            or str(pupil_id) in json.dumps(h)]
    page.locator("#notice-link").click()
    notice = page.locator("#notice").inner_text()
    assert agency["organisation"] in notice and "Dear parent or carer" in notice
    axe(page)


def test_a_failing_endpoint_shows_retrying_then_dead_lettered(platform: BrowserPlatform, children: Children, page: Page,
                                                               receiver: str) -> None:
    failing = register(platform, "South CAMHS", receiver + "/failing")
    pupil_id, assessment_id = new_child(children, assessed=True)
    post(platform, "consent", f"/pupils/{pupil_id}/consents", consent_body("share_camhs"))
    signed_in(page, platform, "senco", next_path=f"/pupils/{pupil_id}/consent")
    page.goto(f"{platform.web}/pupils/{pupil_id}/share?agency_id={failing['agency_id']}&document=report:{assessment_id}")
    page.get_by_role("button", name=f"Send to {failing['organisation']}").click()
    page.wait_for_url(re.compile(rf".*/pupils/{pupil_id}/shares/.*"))
    seen: set[str] = set()

    def settled() -> bool:
        page.reload()
        status = page.locator("#delivery-status").get_attribute("data-status") or ""
        seen.add(status)
        if status == "retrying":
            assert "500" in page.locator("#delivery").inner_text()  # the endpoint's last answer
            axe(page)
        return status == "failed"

    eventually(settled, timeout=60)
    assert "retrying" in seen
    assert page.locator("#delivery-status").inner_text() == "Not delivered (dead-lettered)"
    axe(page)
    assert [d["status"] for d in deliveries_of(platform, failing, pupil_id)] == ["failed"]


def test_a_withdrawal_refuses_a_share_already_on_screen(platform: BrowserPlatform, children: Children, page: Page,
                                                        context: BrowserContext, agency: dict[str, Any]) -> None:
    pupil_id, assessment_id = new_child(children, assessed=True)
    post(platform, "consent", f"/pupils/{pupil_id}/consents", consent_body("share_camhs"))
    check = f"/pupils/{pupil_id}/share?agency_id={agency['agency_id']}&document=report:{assessment_id}"
    signed_in(page, platform, "senco", next_path=f"/pupils/{pupil_id}/consent")
    page.goto(platform.web + check)
    assert "Allowed" in page.locator("#consent-decision").inner_text()

    # Meanwhile the mother withdraws, recorded in another tab.
    other = context.new_page()
    other.goto(f"{platform.web}/pupils/{pupil_id}/consent")
    record_in_browser(other, "share_camhs", "withdrawn")
    other.wait_for_url(re.compile(r".*/receipt\?recorded=1"))
    assert "Withdrawn" in other.locator("#receipt-decision").inner_text()

    # The page on screen still offers Send: the share asks consent again, and is refused.
    page.get_by_role("button", name=f"Send to {agency['organisation']}").click()
    assert page.locator("h1").inner_text() == "Not sent"
    refusal = page.locator("#refusal").inner_text()
    assert "withdrew their consent" in refusal and "Nothing was sent" in refusal
    axe(page)
    time.sleep(1)  # a delivery, had one been queued, would be tried within the poll interval
    assert deliveries_of(platform, agency, pupil_id) == []
    assert not [h for h in Hooks.received if str(pupil_id) in json.dumps(h)]

    # Checked again, the page now says refused and why, and offers nothing to send.
    page.goto(platform.web + check)
    assert "Refused" in page.locator("#consent-decision").inner_text()
    assert "withdrew their consent" in page.locator("#consent-decision").inner_text()
    assert page.locator("#send-form").count() == 0
    axe(page)


def test_the_receipt_prints_alone(platform: BrowserPlatform, children: Children, page: Page) -> None:
    pupil_id, _ = new_child(children)
    recorded = post(platform, "consent", f"/pupils/{pupil_id}/consents", consent_body("interventions", "refused"))
    signed_in(page, platform, "senco", next_path=f"/consent-decisions/{recorded['decision_id']}/receipt")
    assert PARENT in page.locator("#receipt").inner_text()
    assert page.get_by_role("button", name="Print this receipt").is_visible()  # JavaScript shows it
    axe(page)
    page.emulate_media(media="print")
    assert page.locator("#receipt").is_visible()
    for hidden in (".govuk-header", ".govuk-footer", ".flourish-no-print"):
        assert not page.locator(hidden).first.is_visible(), hidden
    assert len(page.pdf()) > 1000  # Chromium prints it


def test_a_teacher_may_neither_record_nor_share(platform: BrowserPlatform, children: Children, page: Page,
                                                context: BrowserContext, agency: dict[str, Any]) -> None:
    pupil_id, _ = new_child(children)
    signed_in(page, platform, "teacher", next_path=f"/pupils/{pupil_id}/consent")
    assert page.locator("#consent-status").is_visible()  # a practitioner may read where consent stands
    assert page.locator("#record-form").count() == 0 and page.locator("#share-link").count() == 0
    axe(page)
    response = page.goto(f"{platform.web}/pupils/{pupil_id}/share")
    assert response is not None and response.status == 403
    assert page.locator("h1").inner_text() == "You do not have access"
    axe(page)
    # Forging the forms (with the session's own CSRF token, from the sign-out form): the APIs refuse.
    token = page.locator('form[action="/sign-out"] input[name="csrf_token"]').get_attribute("value")
    assert token
    forged = {"csrf_token": token, "idempotency_key": str(uuid.uuid4()), "purpose": "share_camhs",
              "decision": "granted", "given_by_name": PARENT, "given_by_relationship": "mother", "method": "paper",
              "decided_day": str(datetime.now(UTC).day), "decided_month": str(datetime.now(UTC).month),
              "decided_year": str(datetime.now(UTC).year)}
    refused = context.request.post(f"{platform.web}/pupils/{pupil_id}/consent", form=forged)
    assert refused.status == 403 and "You do not have access" in refused.text()
    shared = context.request.post(f"{platform.web}/pupils/{pupil_id}/share", form={
        "csrf_token": token, "idempotency_key": str(uuid.uuid4()), "agency_id": agency["agency_id"],
        "document": f"report:{uuid.uuid4()}"})
    assert shared.status == 403 and "You do not have access" in shared.text()
    assert history(platform, pupil_id) == [] and deliveries_of(platform, agency, pupil_id) == []


def test_a_double_submit_is_applied_once(platform: BrowserPlatform, children: Children, page: Page, context: BrowserContext,
                                         agency: dict[str, Any]) -> None:
    pupil_id, assessment_id = new_child(children, assessed=True)
    signed_in(page, platform, "senco", next_path=f"/pupils/{pupil_id}/consent")
    form = page.locator("#record-form")
    fields = {name: form.locator(f'input[name="{name}"]').get_attribute("value") or ""
              for name in ("csrf_token", "idempotency_key", "rendered_at", "decided_day", "decided_month",
                                                     "decided_year")}
    sent = {**fields, "purpose": "share_camhs", "decision": "granted", "given_by_name": PARENT,
            "given_by_relationship": "mother", "method": "email"}
    first = context.request.post(f"{platform.web}/pupils/{pupil_id}/consent", form=sent, max_redirects=0)
    second = context.request.post(f"{platform.web}/pupils/{pupil_id}/consent", form=sent, max_redirects=0)
    assert first.status == second.status == 303
    assert first.headers["location"] == second.headers["location"]
    assert len(history(platform, pupil_id)) == 1

    page.goto(f"{platform.web}/pupils/{pupil_id}/share?agency_id={agency['agency_id']}&document=report:{assessment_id}")
    send = page.locator("#send-form")
    fields = {name: send.locator(f'input[name="{name}"]').get_attribute("value") or ""
              for name in ("csrf_token", "idempotency_key", "agency_id", "document")}
    first = context.request.post(f"{platform.web}/pupils/{pupil_id}/share", form=fields, max_redirects=0)
    second = context.request.post(f"{platform.web}/pupils/{pupil_id}/share", form=fields, max_redirects=0)
    assert first.status == second.status == 303
    assert first.headers["location"] == second.headers["location"]
    eventually(lambda: [d["status"] for d in deliveries_of(platform, agency, pupil_id)] == ["delivered"])
    time.sleep(0.5)
    assert len(deliveries_of(platform, agency, pupil_id)) == 1


def test_bad_input_is_shown_and_changes_nothing(platform: BrowserPlatform, children: Children, page: Page) -> None:
    pupil_id, _ = new_child(children)
    signed_in(page, platform, "senco", next_path=f"/pupils/{pupil_id}/consent")
    record_in_browser(page, "share_camhs", "granted", name="")  # the API refuses an empty name
    summary = page.locator(".govuk-error-summary").inner_text()
    assert "given_by.name" in summary
    assert page.get_by_label("Relationship to the child").input_value() == "mother"  # what was typed is kept
    axe(page)
    page.locator("#decided_day").fill("31")
    page.locator("#decided_month").fill("2")
    record_in_browser(page, "share_camhs", "granted")
    assert "enter a real date" in page.locator(".govuk-error-summary").inner_text()
    page.locator("#decided_day").fill("1")
    page.locator("#decided_month").fill("1")
    page.locator("#decided_year").fill(str(datetime.now(UTC).year + 1))
    record_in_browser(page, "share_camhs", "granted")
    assert "today or in the past" in page.locator(".govuk-error-summary").inner_text()
    page.locator("#decided_year").fill(str(datetime.now(UTC).year))
    # A withdrawal of consent never given: the consent service's own refusal.
    page.locator("#decided_day").fill(str(datetime.now(UTC).day))
    page.locator("#decided_month").fill(str(datetime.now(UTC).month))
    record_in_browser(page, "share_social_care", "withdrawn")
    assert page.locator(".govuk-error-summary").is_visible()
    axe(page)
    assert history(platform, pupil_id) == []
