"""The whole story on the real platform (issue 9, items 1 and 5): a trust with two academies goes
from an MIS file to an issued plan, a report shared with an agency only under consent, a withdrawal,
retention and erasure, and an audit that answers the DPO and verifies clean. The services run as
real processes and are driven through their public HTTP APIs only; afterwards one trace is
followed through every service's spans, and the logs and spans are searched for personal data
and secrets.

Each step of the story is a test of its own, so a run reports which step failed. The steps share
one platform and one `Story` (module-scoped) and run in the order of this file; a step that needs
an earlier one that did not pass fails at once, naming it (`step`)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from standardwebhooks.webhooks import Webhook

from flourish.kafka_acls import deprovision, provision
from flourish.local.services import platform_environment
from shared.auth import Role
from shared.settings import Settings
from tests.conftest import database_of_its_own
from tests.e2e.conftest import Platform, Receiver, _platform
from tests.integration.kernel.helpers import eventually
from tests.unit.assessment.report import levels_at

SAMPLE = "flourish-sample-1"
CREATED = 201
OK = 200
TODAY = date.today()
LEFT_ON = TODAY - timedelta(days=40)

# The MIS export: distinctive names, so a scan cannot miss them or find them by accident.
HEADER = "UPN,Legal Surname,Legal Forename,Preferred Forename,DOB,Gender,Year,Reg Group,Leaving Date"


@dataclass(frozen=True)
class Child:
    upn: str
    surname: str
    forename: str
    known_as: str
    born: date
    gender: str
    left_on: date | None = None

    def row(self, reg_group: str) -> str:
        leaving = f"{self.left_on:%d/%m/%Y}" if self.left_on else ""
        return (f"{self.upn},{self.surname},{self.forename},{self.known_as},{self.born:%d/%m/%Y},{self.gender},4,"
                f"{reg_group},{leaving}")

    def personal_data(self) -> list[str]:
        """Every way this child's details could show up in a log line or a span attribute."""
        b = self.born
        dates = [f"{b:%d/%m/%Y}", f"{b:%d-%m-%Y}", f"{b:%d.%m.%Y}", b.isoformat(), f"{b:%Y%m%d}",
                 f"{b.day}/{b.month}/{b.year}", f"{b:%Y/%m/%d}", f"{b.day} {b:%B %Y}"]
        return [self.upn, self.surname, self.forename, self.known_as, *dates]


OAK = [  # the first academy's Year 4 class; the first child is the story's
    Child("K820405123011", "Quillfeather", "Wrenna", "Wrennie", date(2016, 11, 7), "F"),
    Child("K820405123022", "Ashcombe-Tate", "Bartholomew", "Bartle", date(2017, 2, 14), "M"),
    Child("K820405123033", "Okonkwo-Lisle", "Saoirse", "Seersha", date(2016, 9, 23), "F"),
    Child("K820405123044", "Vantongeren", "Ezekiel", "Zekiah", date(2017, 6, 30), "M"),
]
ELM = [  # the second academy: the second of them left forty days ago
    Child("M730918456011", "Pemberthy", "Ottoline", "Linnet", date(2016, 12, 19), "F"),
    Child("M730918456022", "Drummelzier", "Caspian", "Caspo", date(2017, 3, 8), "M"),
]
REFUSED = Child("K820405123055", "Featherstonehaugh", "Philippa", "Pippilotta", date(2017, 1, 5), "F")
BAD_DOB = "31/02/2017"  # the row that makes the file refused
PARENT = "Rosalind Quillfeather"


@dataclass
class Story:
    """What the story learns as it goes."""

    platform: Platform
    pupils: dict[str, uuid.UUID] = field(default_factory=dict)  # UPN → pupil id
    class_id: uuid.UUID | None = None
    secrets: list[str] = field(default_factory=list)
    data_keys: list[str] = field(default_factory=list)
    trace_id: int = 0
    root_span_id: int = 0
    traceparent: dict[str, str] = field(default_factory=dict)
    journey: Span | None = None  # the test's root span over the assessment and the plan
    assessment_id: str = ""
    plan_id: str = ""
    report: str = ""
    agency: dict[str, Any] = field(default_factory=dict)  # as registered, then its shares and delivery
    passed: set[str] = field(default_factory=set)  # the steps that passed so far

    @property
    def child(self) -> uuid.UUID:
        return self.pupils[OAK[0].upn]

    @property
    def senco(self) -> dict[str, str]:
        return self.platform.as_(Role.senco, "senco-7")

    @property
    def dpo(self) -> dict[str, str]:
        return self.platform.as_(Role.dpo, "dpo-1")


async def soon(check: Callable[[], Awaitable[Any]]) -> Any:
    """An effect that crosses Kafka: polled, with room for a consumer group's rebalance on a busy
    machine (other platforms join the same group names: see docs/testing.md)."""
    return await eventually(check, timeout=120, interval=0.2)


def ok(response: httpx.Response, status: int = OK) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.headers.get("content-type", "").endswith("json") else response.text


def csv(children: list[Child], reg_group: str) -> bytes:
    return ("\r\n".join([HEADER, *(c.row(reg_group) for c in children)]) + "\r\n").encode()


def now() -> str:
    return datetime.now(UTC).isoformat()


# --- One platform, one story, steps in order ------------------------------------------------------


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    """The agency's webhook receiver, for the whole story (the sharing tests' own is per test)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    hook = Receiver(url=f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    server = uvicorn.Server(uvicorn.Config(hook, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    await eventually(started)
    yield hook
    server.should_exit = True
    await task


@pytest.fixture(scope="module")
async def platform(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """The four services, started once for every step (the conftest's `platform` is per test)."""
    prefix = f"test.{uuid.uuid4().hex[:10]}."
    await provision(stack_settings, prefix)  # the prefix's topics and ACLs, as Kafka's admin
    with database_of_its_own(stack_settings, "e2e") as own:
        async for platform in _platform(own, prefix, tmp_path_factory.mktemp("e2e")):
            yield platform
    await deprovision(stack_settings, prefix)


@pytest.fixture(scope="module")
def story(platform: Platform) -> Story:
    return Story(platform)


StepTest = Callable[..., Awaitable[None]]


def step(*needs: StepTest) -> Callable[[StepTest], StepTest]:
    """A step of the story. Steps run in the order of this file against one platform and one
    `Story`; a step that needs an earlier one fails at once, naming the first it needs that did not
    pass, instead of running on a story that stopped short (or being skipped, which would hide the
    failure)."""

    def decorate(test: StepTest) -> StepTest:
        @functools.wraps(test)
        async def run(story: Story, **fixtures: Any) -> None:
            missing = [need.__name__ for need in needs if need.__name__ not in story.passed]
            if missing:
                pytest.fail(f"not run: it needs step {missing[0]}, which did not pass", pytrace=False)
            await test(story, **fixtures)
            story.passed.add(test.__name__)

        return run

    return decorate


# --- The story ----------------------------------------------------------------------------------


@step()
async def test_the_trust_admin_names_the_trust_and_registers_two_academies(story: Story) -> None:
    p = story.platform
    admin = p.as_(Role.trust_admin)
    ok(await p.assessment.put("/trust", json={"name": "Riverbend Learning Trust"}, headers=admin))
    for academy, name in zip(p.academies, ["Oak Hill Primary", "Elm Grove Primary"], strict=True):
        assert (await p.assessment.put(f"/academies/{academy}", json={"name": name}, headers=admin)).status_code in (OK, CREATED)
    listed = ok(await p.assessment.get("/academies", headers=admin))
    assert {a["academy_id"] for a in listed["items"]} == {str(a) for a in p.academies}


@step(test_the_trust_admin_names_the_trust_and_registers_two_academies)
async def test_each_academy_imports_its_pupils_from_its_mis_file(story: Story) -> None:
    p = story.platform
    for academy, children, reg_group in [(p.academies[0], OAK, "4B"), (p.academies[1], ELM, "4E")]:
        senco = p.as_(Role.senco, "senco-7", [academy])
        imported = ok(await p.assessment.post(f"/academies/{academy}/roster-imports", content=csv(children, reg_group),
                                              headers={**senco, "Content-Type": "text/csv"}))
        assert imported["rows"] == len(children) and len(imported["enrolled"]) == len(children), imported
        for entry in imported["enrolled"]:
            story.pupils[children[entry["row"] - 2].upn] = uuid.UUID(str(entry["pupil_id"]))
    # The next export from the second academy's MIS has the leaving date of the pupil who left.
    leaver = Child(**{**ELM[1].__dict__, "left_on": LEFT_ON})
    elm_senco = p.as_(Role.senco, "senco-7", [p.academies[1]])
    again = ok(await p.assessment.post(f"/academies/{p.academies[1]}/roster-imports", content=csv([ELM[0], leaver], "4E"),
                                       headers={**elm_senco, "Content-Type": "text/csv"}))
    assert (again["left"], again["unchanged"], again["enrolled"]) == (1, 1, []), again
    classes = ok(await p.assessment.get(f"/academies/{p.academies[0]}/classes", headers=story.senco))["items"]
    story.class_id = next(uuid.UUID(c["class_id"]) for c in classes if c["name"] == "4B")
    on_roll = ok(await p.assessment.get(f"/classes/{story.class_id}/pupils", headers=story.senco))["items"]
    assert {uuid.UUID(r["pupil_id"]) for r in on_roll} == {story.pupils[c.upn] for c in OAK}
    record = ok(await p.assessment.get(f"/pupils/{story.child}", headers=story.senco))
    assert (record["upn"], record["legal_surname"], record["date_of_birth"]) == (OAK[0].upn, OAK[0].surname,
                                                                                   OAK[0].born.isoformat())


@step(test_each_academy_imports_its_pupils_from_its_mis_file)
async def test_a_file_with_a_bad_row_is_refused_whole_without_quoting_it(story: Story) -> None:
    p = story.platform
    bad = csv([OAK[0], REFUSED], "4B").replace(f"{REFUSED.born:%d/%m/%Y}".encode(), BAD_DOB.encode())
    refused = await p.assessment.post(f"/academies/{p.academies[0]}/roster-imports", content=bad,
                                      headers={**story.senco, "Content-Type": "text/csv"})
    assert refused.status_code == 422 and refused.headers["content-type"].startswith("application/problem+json")
    assert [(q["row"], q["column"]) for q in refused.json()["problems"]] == [(3, "DOB")], refused.text
    assert not [s for s in [*REFUSED.personal_data(), BAD_DOB] if s in refused.text]
    on_roll = ok(await p.assessment.get(f"/classes/{story.class_id}/pupils", headers=story.senco))["items"]
    assert len(on_roll) == len(OAK) and REFUSED.surname not in str(on_roll)  # nothing of the file imported


def consent_body(purpose: str, decision: str = "granted") -> dict[str, Any]:
    return {"purpose": purpose, "decision": decision, "given_by": {"name": PARENT, "relationship": "mother"},
            "method": "paper", "evidence_reference": f"form signed by {PARENT}", "decided_at": now()}


@step(test_each_academy_imports_its_pupils_from_its_mis_file)
async def test_consent_is_recorded_for_taking_part_and_for_speech_and_language(story: Story) -> None:
    p = story.platform

    async def known_to_consent() -> bool:  # consent learns of pupils from PupilEnrolled on Kafka
        response = await p.consent.get(f"/pupils/{story.child}/consents", headers=story.senco)
        return response.status_code == OK

    await soon(known_to_consent)
    for purpose in ("interventions", "share_speech_and_language"):
        ok(await p.consent.post(f"/pupils/{story.child}/consents", json=consent_body(purpose), headers=story.senco),
           CREATED)
    now_in_force = ok(await p.consent.get(f"/pupils/{story.child}/consents", headers=story.senco))
    assert PARENT not in str(now_in_force)
    by_purpose = {item["purpose"]: item for item in now_in_force["purposes"]}
    assert by_purpose["interventions"]["in_force"] is True
    assert by_purpose["share_speech_and_language"]["sharing_allowed"]["report"] is True
    assert by_purpose["share_camhs"]["sharing_allowed"]["report"] is False


@step(test_each_academy_imports_its_pupils_from_its_mis_file)
async def test_the_class_is_screened(story: Story) -> None:
    p = story.platform
    started = ok(await p.assessment.post("/assessments", headers=story.senco, json={
        "class_id": str(story.class_id), "strands": ["being"], "framework_version": SAMPLE}), CREATED)
    screening_id = started["screening_id"]
    ratings = [{"pupil_id": a["pupil_id"], "statement_id": statement, "level": level.value,
                "assessment_id": a["assessment_id"]}
               for n, a in enumerate(started["assessments"]) for statement, level in levels_at(1 + n % 3).items()]
    assert len(ratings) == 45 * len(OAK)
    ok(await p.assessment.post("/observations/bulk", json={"observed_at": now(), "ratings": ratings},
                               headers=story.senco), CREATED)
    ok(await p.assessment.post(f"/screenings/{screening_id}/complete", headers=story.senco))
    profile = ok(await p.assessment.get(f"/screenings/{screening_id}/profile", headers=story.senco))
    # Every child works at Being (the Skills and Structure expected at eight or nine is far off).
    assert {(c["pupil_id"], c["working_at"]) for c in profile["children"]} == {
        (str(story.pupils[c.upn]), "being") for c in OAK}


@step(test_each_academy_imports_its_pupils_from_its_mis_file)
async def test_the_child_is_assessed_under_one_trace(story: Story) -> None:
    """The practitioner's journey starts here, under the test's root span: every request of it (this
    step and the plan's) carries its traceparent, the first observation first."""
    root = trace.get_tracer("tests.e2e").start_span("story: one child's assessment and plan")
    story.journey = root
    story.trace_id, story.root_span_id = root.get_span_context().trace_id, root.get_span_context().span_id
    TraceContextTextMapPropagator().inject(story.traceparent, context=trace.set_span_in_context(root))
    p = story.platform
    staff = {**p.as_(Role.practitioner, "practitioner-7"), **story.traceparent}
    started = ok(await p.assessment.post("/assessments", headers=staff, json={
        "pupil_id": str(story.child), "strands": ["being"], "framework_version": SAMPLE}), CREATED)
    story.assessment_id = assessment_id = started["assessments"][0]["assessment_id"]
    (first, level), *rest = levels_at(1).items()
    ok(await p.assessment.post("/observations", headers=staff, json={
        "pupil_id": str(story.child), "statement_id": first, "level": level.value, "observed_at": now(),
        "assessment_id": assessment_id, "note": f"{OAK[0].known_as} hid under the table at first"}), CREATED)
    ok(await p.assessment.post("/observations/bulk", headers=staff, json={"observed_at": now(), "ratings": [
        {"pupil_id": str(story.child), "statement_id": s, "level": lv.value, "assessment_id": assessment_id}
        for s, lv in rest]}), CREATED)
    ok(await p.assessment.post(f"/assessments/{assessment_id}/complete", headers=staff))


@step(test_the_class_is_screened, test_the_child_is_assessed_under_one_trace)
async def test_planning_suggests_a_plan_and_the_practitioner_issues_it(story: Story) -> None:
    p = story.platform
    staff = {**p.as_(Role.practitioner, "practitioner-7"), **story.traceparent}
    try:
        async def suggestion() -> Any:  # planning learns the scores from StrandScored on Kafka
            response = await p.planning.get(f"/pupils/{story.child}/suggestion", headers=staff)
            body = response.json() if response.status_code == OK else {}
            return body if story.assessment_id in [str(a) for a in body.get("based_on", [])] else None

        suggested = await soon(suggestion)
        assert suggested["strand"] == "being" and suggested["issued"] is False
        assert suggested["focus_needs"] == ["being.special", "being.needs-met"]
        draft = ok(await p.planning.post("/plans", headers={**staff, "Idempotency-Key": str(uuid.uuid4())}, json={
            "kind": "individual", "pupil_ids": [str(story.child)], "strand": suggested["strand"],
            "targets": [t["statement_id"] for t in suggested["targets"]],
            "activities": [a["activity"] for a in suggested["activities"]],
            "frequency": {k: suggested["frequency"][k] for k in ("sessions_per_week", "minutes", "setting")},
            "review_on": str(TODAY + timedelta(weeks=6))}), CREATED)
        assert draft["status"] == "draft"
        issued = ok(await p.planning.post(f"/plans/{draft['plan_id']}/issue", headers=staff,
                                          json={"practitioner_id": "practitioner-7"}))
        assert issued["status"] == "issued"
        story.plan_id = str(draft["plan_id"])
    finally:
        if story.journey is not None:
            story.journey.end()  # the journey ends with the issued plan


@step(test_planning_suggests_a_plan_and_the_practitioner_issues_it)
async def test_sessions_are_logged_against_the_plan(story: Story) -> None:
    p = story.platform
    staff = p.as_(Role.practitioner, "practitioner-7")
    for days_ago in (14, 10, 7, 3):
        ok(await p.planning.post(f"/plans/{story.plan_id}/sessions", headers=staff, json={
            "held_on": str(TODAY - timedelta(days=days_ago)), "minutes": 30, "staff_present": ["practitioner-7"],
            "note": f"{OAK[0].known_as} chose the sand tray"}), CREATED)
    totals = ok(await p.planning.get(f"/plans/{story.plan_id}/session-totals", headers=staff))
    assert (totals["sessions"], totals["hours"]) == (4, 2.0)


@step(test_sessions_are_logged_against_the_plan)
async def test_the_plan_is_reviewed_and_reporting_shows_it(story: Story) -> None:
    p = story.platform
    staff = p.as_(Role.practitioner, "practitioner-7")
    reviewed = ok(await p.planning.post(f"/plans/{story.plan_id}/review", headers=staff))
    assert reviewed["status"] == "reviewed" and reviewed["review"]["pupils"][0]["pupil_id"] == str(story.child)

    async def in_profile() -> bool:  # reporting's read models, from the planning topic
        profile = (await p.reporting.get(f"/pupils/{story.child}/profile", headers=story.senco)).json()
        return any(plan["reviews"] and (plan["sessions"], plan["minutes"]) == (4, 120) for plan in profile.get("plans", []))

    await soon(in_profile)


@step(test_the_plan_is_reviewed_and_reporting_shows_it)
async def test_the_intervention_report_is_produced_anonymised(story: Story) -> None:
    p = story.platform
    response = await p.reporting.get(f"/pupils/{story.child}/intervention-report", params={"format": "html"},
                                     headers=story.senco)
    assert response.status_code == OK and response.headers["content-type"].startswith("text/html"), response.text
    html = response.text
    assert "<svg" in html and "Being" in html
    assert not [s for s in OAK[0].personal_data() if s in html]  # anonymised
    story.report = html


async def share_the_report(story: Story) -> Any:
    p = story.platform
    # The share names the report (as of the child's latest assessment); the platform assembles it.
    profile = ok(await p.reporting.get(f"/pupils/{story.child}/profile", headers=story.senco), OK)
    return ok(await p.reporting.post("/sharing/shares", headers={**story.senco, "Idempotency-Key": str(uuid.uuid4())},
                                     json={"agency_id": story.agency["agency_id"], "pupil_id": str(story.child),
                                           "document_kind": "report",
                                           "document_id": str(profile["latest_assessment_id"])}), CREATED)


@step(test_the_intervention_report_is_produced_anonymised)
async def test_sharing_the_report_without_consent_is_blocked(story: Story, receiver: Receiver) -> None:
    p = story.platform
    agency = ok(await p.reporting.post("/sharing/agencies", headers=story.dpo, json={
        "category": "camhs", "organisation": "North Riverbend CAMHS", "endpoint_url": receiver.url}), CREATED)
    story.secrets.append(agency["signing_secret"])
    story.agency = agency
    blocked = await share_the_report(story)
    assert blocked["status"] == "blocked" and blocked["delivery_id"] is None, blocked
    story.agency["blocked_share_id"] = blocked["share_id"]


@step(test_sharing_the_report_without_consent_is_blocked)
async def test_with_consent_the_report_is_delivered_once_and_signed(story: Story, receiver: Receiver) -> None:
    p, agency = story.platform, story.agency
    ok(await p.consent.post(f"/pupils/{story.child}/consents", json=consent_body("share_camhs"), headers=story.senco),
       CREATED)
    accepted = await share_the_report(story)
    assert accepted["status"] == "accepted" and accepted["consent_obtained"] is True, accepted

    async def delivered() -> bool:
        response = await p.reporting.get(f"/sharing/deliveries/{accepted['delivery_id']}", headers=story.senco)
        return response.json().get("status") == "delivered"

    await soon(delivered)
    # Only the share made under consent reached the agency, once, signed with its secret.
    assert [r["headers"]["webhook-id"] for r in receiver.received] == [accepted["delivery_id"]]
    payload = Webhook(agency["signing_secret"]).verify(receiver.received[0]["body"], receiver.received[0]["headers"])
    assert payload["type"] == "share.created" and payload["data"]["pupil_id"] == str(story.child)
    document = payload["data"]["document"]
    assert document["kind"] == "report" and document["pupil_id"] == str(story.child)
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    assert hashlib.sha256(canonical).hexdigest() == accepted["document_sha256"]
    assert not [s for s in OAK[0].personal_data() if s in canonical.decode()]  # anonymised
    agency.update(share_id=accepted["share_id"], delivery_id=accepted["delivery_id"])


@step(test_with_consent_the_report_is_delivered_once_and_signed)
async def test_withdrawing_consent_sends_the_agency_a_deletion_notice(story: Story, receiver: Receiver) -> None:
    p, agency = story.platform, story.agency
    ok(await p.consent.post(f"/pupils/{story.child}/consents/share_camhs/withdrawal", headers=story.senco, json={
        "given_by": {"name": PARENT, "relationship": "mother"}, "method": "email", "withdrawn_at": now()}), CREATED)

    async def notice() -> Any:
        return [r for r in receiver.received if orjson.loads(r["body"])["type"] == "share.deletion_requested"]

    (request,) = await soon(notice)
    payload = Webhook(agency["signing_secret"]).verify(request["body"], request["headers"])
    assert payload["data"]["pupil_id"] == str(story.child) and payload["data"]["share_ids"] == [agency["share_id"]]
    refused = await share_the_report(story)
    assert refused["status"] == "blocked"


@step(test_with_consent_the_report_is_delivered_once_and_signed)
async def test_signing_secrets_are_never_returned_after_registration(story: Story) -> None:
    p, agency = story.platform, story.agency
    secret = agency["signing_secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    listed = ok(await p.reporting.get("/sharing/agencies", headers=story.dpo))
    (mine,) = [a for a in listed["items"] if a["agency_id"] == agency["agency_id"]]
    assert mine["category"] == "camhs" and not {"signing_secret", "secret"} & set(mine)
    answers = [listed, ok(await p.reporting.get(f"/sharing/deliveries/{agency['delivery_id']}", headers=story.senco)),
               ok(await p.reporting.get(f"/sharing/agencies/{agency['agency_id']}/deliveries", headers=story.senco))]
    assert answers[1]["status"] == "delivered" and answers[2]["items"]  # real answers, not refusals
    assert not [a for a in answers if secret.removeprefix("whsec_") in orjson.dumps(a).decode()]


@step(test_each_academy_imports_its_pupils_from_its_mis_file)
async def test_data_keys_are_for_services_only(story: Story) -> None:
    p = story.platform
    path = f"/pupils/{story.child}/data-key"
    for role in (Role.practitioner, Role.senco, Role.trust_admin, Role.dpo, Role.auditor, Role.admin):
        response = await p.consent.get(path, headers=p.as_(role))
        assert response.status_code == 403, (role, response.text)
        assert "key" not in response.json() or response.json().get("key") is None
    own = ok(await p.consent.get(path, headers=p.as_(Role.service, "svc-reporting")))
    story.data_keys.append(own["key"])  # the scan looks for it in every log and span


@step(test_each_academy_imports_its_pupils_from_its_mis_file)
async def test_the_leaver_expires_and_the_child_is_erased(story: Story) -> None:
    p = story.platform
    leaver, elm = story.pupils[ELM[1].upn], p.academies[1]
    policy = {"counted_from": "leaving_date", "period": {"days": 30}}
    ok(await p.consent.put(f"/academies/{elm}/retention-policies/all", json=policy, headers=story.dpo))

    async def expired() -> Any:  # consent learns the leaving date from PupilLeft on Kafka
        run = ok(await p.consent.post("/retention/runs", headers=story.dpo))
        return [e for e in run["expired"] if e["pupil_id"] == str(leaver)] or None

    (expiry,) = await soon(expired)
    assert expiry["data_category"] == "all"
    ok(await p.consent.post(f"/pupils/{story.child}/erasure", json={"reason": "right_to_erasure"}, headers=story.dpo),
       CREATED)
    for pupil, academy in ((leaver, elm), (story.child, p.academies[0])):
        senco = p.as_(Role.senco, "senco-7", [academy])

        async def gone(pupil: uuid.UUID = pupil, senco: dict[str, str] = senco) -> bool:
            return (await p.assessment.get(f"/pupils/{pupil}", headers=senco)).status_code == 410

        await soon(gone)
        record = ok(await p.consent.get(f"/pupils/{pupil}/erasure", headers=story.dpo))
        assert record["key_material_present"] is False
    key = await p.consent.get(f"/pupils/{story.child}/data-key", headers=p.as_(Role.service, "svc-reporting"))
    assert key.status_code == 410
    roll = ok(await p.assessment.get(f"/classes/{story.class_id}/pupils", headers=story.senco))
    assert OAK[0].surname not in str(roll) and OAK[1].surname in str(roll)


@step(test_with_consent_the_report_is_delivered_once_and_signed, test_the_leaver_expires_and_the_child_is_erased)
async def test_the_audit_answers_who_shared_what_with_which_agency_and_verifies(story: Story) -> None:
    p, agency = story.platform, story.agency
    auditor = p.as_(Role.auditor, "auditor-1")
    window = {"from": str(TODAY - timedelta(days=1)), "to": str(TODAY + timedelta(days=1))}

    wanted = {(agency["share_id"], "share"), (agency["blocked_share_id"], "share_blocked")}

    async def shares() -> Any:  # the ledger records the reporting service's events from Kafka
        body = ok(await p.reporting.get("/audit/shares", params={**window, "include_blocked": "true"}, headers=story.dpo))
        return body if wanted <= {(r["share_id"], r["action"]) for r in body["items"]} else None

    answer = await soon(shares)
    (delivered,) = [r for r in answer["items"] if r["share_id"] == agency["share_id"] and r["action"] == "share"]
    assert (delivered["agency_id"], delivered["agency_category"], delivered["pupil_id"]) == (
        agency["agency_id"], "camhs", str(story.child))
    assert delivered["consent_in_force"] is True and delivered["consent_decisions"]
    assert {r["agency_id"] for r in answer["items"]} == {agency["agency_id"]}
    erased = {str(story.child), str(story.pupils[ELM[1].upn])}

    async def erasures() -> bool:
        entries = ok(await p.reporting.get("/audit/entries", params={"kind": "erasure"}, headers=auditor))
        return erased <= {e.get("pupil_id") for e in entries["items"]}

    await soon(erasures)

    async def reads() -> Any:  # the SENCo opened the child's roster record in the import step
        body = ok(await p.reporting.get(f"/audit/pupils/{story.child}/reads", headers=auditor))
        return [r for r in body["items"] if r["reader"] == "senco-7"]

    assert (await soon(reads))[0]["service"].endswith("assessment")
    await signed_checkpoint(story)
    key = ok(await p.reporting.get("/audit/public-key", headers=auditor))
    key_file = p.settings.state_dir / "audit-public-key.json"
    key_file.write_text(orjson.dumps(key).decode())
    verify = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "flourish"), "audit", "verify", "--trust", str(p.trust_id),
        "--public-key", str(key_file), "--json", env=cli_environment(p), stdout=asyncio.subprocess.PIPE)
    output, _ = await verify.communicate()
    assert verify.returncode == 0, output.decode()
    (chain,) = orjson.loads(output)["chains"]
    assert chain["ok"] and chain["checkpoints"] >= 1 and chain["entries"] >= 10 and chain["first_mismatch"] is None
    print(f"audit verify: {chain['entries']} entries, {chain['checkpoints']} checkpoint(s), ok")


async def signed_checkpoint(story: Story) -> Any:
    """The ledger signs a checkpoint within a second of its last entry (FLOURISH_AUDIT_CHECKPOINT_EVERY_S)."""
    auditor = story.platform.as_(Role.auditor, "auditor-1")

    async def latest() -> Any:
        checkpoints = ok(await story.platform.reporting.get("/audit/checkpoints", headers=auditor))
        return checkpoints["items"] or None

    return await soon(latest)


def cli_environment(p: Platform) -> dict[str, str]:
    return {**os.environ, **platform_environment(p.settings)}


@step()
async def test_the_services_stop_and_flush_their_spans(story: Story) -> None:
    """SIGTERM every service: each flushes its batched spans as it shuts down. Runs whatever came
    before, so the trace and the scan always have what the platform left."""
    assert sorted(await story.platform.stop()) == ["assessment", "consent", "planning", "reporting"]


# --- What the platform left behind ---------------------------------------------------------------


@step(test_the_child_is_assessed_under_one_trace, test_planning_suggests_a_plan_and_the_practitioner_issues_it,
      test_the_services_stop_and_flush_their_spans)
async def test_the_first_observation_is_one_trace_through_every_service(story: Story) -> None:
    trace_id = f"0x{story.trace_id:032x}"
    ours = [s for s in story.platform.spans() if s["context"]["trace_id"] == trace_id]
    by_service: dict[str, list[dict[str, Any]]] = {}
    for span in ours:
        by_service.setdefault(span["resource"]["attributes"]["service.name"], []).append(span)
    assert set(by_service) == {"flourish-assessment", "flourish-planning", "flourish-consent", "flourish-reporting"}
    print("spans of the journey's trace:", {name: len(spans) for name, spans in sorted(by_service.items())})

    def consumed(service: str, event: str) -> list[dict[str, Any]]:
        return [s for s in by_service[service] if s["kind"] == "SpanKind.CONSUMER"
                and s["attributes"].get("cloudevents.event_type") == f"flourish.assessment.{event}.v1"]

    observed = [s for s in by_service["flourish-assessment"]
                if s["kind"] == "SpanKind.SERVER" and s["attributes"].get("http.route") == "/observations"]
    # One server span for the request (FastAPI's own would be a second), a child of the test's root span.
    assert len(observed) == 1 and observed[0]["parent_id"] == f"0x{story.root_span_id:016x}"
    # The observation itself crossed Kafka to consent (last activity) and reporting (read models):
    # their consumer spans are children of the request's span, through the traceparent the event kept.
    first = observed[0]["context"]["span_id"]
    for service in ("flourish-consent", "flourish-reporting"):
        assert len([s for s in consumed(service, "ObservationRecorded") if s["parent_id"] == first]) == 1, service
    # ...and the completed assessment of the same journey to planning (suggestions) and reporting.
    assert consumed("flourish-planning", "StrandScored") and consumed("flourish-reporting", "StrandScored")


SECRET_SHAPES = [re.compile(rb"eyJ[\w-]{8,}\.eyJ[\w-]{8,}"), re.compile(rb"whsec_"), re.compile(rb"(?i)bearer\s+\w")]
NOTES = ["hid under the table", "chose the sand tray"]  # free text staff wrote about the child


def leaks(content: bytes, personal: list[str], secrets: list[str]) -> list[str]:
    """What of the personal data (any case) and secrets (exactly, or by their shape) a file holds;
    a secret is named by a prefix of its hash, so a failure does not print it."""
    hits = [s for s in personal if s.lower().encode() in content.lower()]
    hits += [hashlib.sha256(s.encode()).hexdigest()[:12] for s in secrets if s.encode() in content]
    return hits + [shape.pattern.decode() for shape in SECRET_SHAPES if shape.search(content)]


@step(test_the_services_stop_and_flush_their_spans)
async def test_nothing_personal_or_secret_is_in_the_logs_or_spans(story: Story) -> None:
    p = story.platform
    personal = [s for child in [*OAK, *ELM, REFUSED] for s in child.personal_data()] + [PARENT, *PARENT.split(), *NOTES, BAD_DOB]
    secrets = [*story.secrets, *(s.removeprefix("whsec_") for s in story.secrets), *story.data_keys, *p.tokens]
    secrets += [base64.urlsafe_b64encode(base64.b64decode(k)).decode().rstrip("=") for k in story.data_keys]
    # The scan finds what it looks for: a date of birth in another format, a note, a token.
    planted = f'{{"msg": "born {OAK[2].born.day} {OAK[2].born:%B %Y}, Seersha HID UNDER THE TABLE", "auth": "{p.tokens[0]}"}}'
    assert len(leaks(planted.encode(), personal, secrets)) == 5
    files = [*p.log_files(), p.settings.trace_file]
    assert all(path is not None and path.stat().st_size > 0 for path in files)  # there was something to scan
    found = {path.name: hits for path in files if path and (hits := leaks(path.read_bytes(), personal, secrets))}
    assert found == {}
    assert len(p.spans()) > 100
    print(f"scanned {len(files)} files, {sum(path.stat().st_size for path in files if path)} bytes, "
          f"{len(p.spans())} spans, {len(personal)} personal values, {len(secrets)} secrets: nothing found")
