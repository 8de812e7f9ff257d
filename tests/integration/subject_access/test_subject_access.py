"""Subject access, complete, in one call (issue 15 item 4; UK GDPR Art. 15), through the public APIs.

The four services run in process on the real PostgreSQL and Kafka, wired as in production (the
consent service gathers the other three's parts with the DPO's own token). A story writes a
child's roster record, a group they are in, observations with a note, an assessment, an
individual plan and a group plan with another child (reviewed), a session of each with a note, a
consent and a lawful basis, a share to two agencies (one under each basis), a withdrawal that
sends a deletion notice, and a read of the record. The export is then compared with everything the
story wrote, item by item; the other child (their id, names, UPN, notes, sessions) appears nowhere
in it; the HTML page parses and shows hostile values as text; a non-DPO gets 403 from every part,
another trust's DPO 404; a part that fails is named with what happened.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from services.reporting.sharing import SharingSettings
from shared.auth import DevIssuer, Role
from tests.integration.assessment.helpers import upn
from tests.integration.kernel.helpers import eventually
from tests.integration.reporting.sharing.conftest import Receiver
from tests.integration.services.in_process import four_services, settings_for
from tests.unit.assessment.report import levels_at

SAMPLE = "flourish-sample-1"
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group,Leaving Date"
TODAY = date.today()
DELIVERY = SharingSettings(allowed_private_networks=["127.0.0.1/32"], max_attempts=3, poll_interval_s=0.05,
                           retry_schedule_s=[0, 0.2, 0.4])
PEERS = ("assessment", "planning", "reporting")

CHILD = {"surname": "Okafor", "forename": "Adaeze", "dob": "2017-04-03", "gender": "F"}
OTHER = {"surname": "Quillfeather", "forename": "Bartholomew", "dob": "2016-11-09", "gender": "M"}
HOSTILE = '<script>alert("sa")</script>'
OBSERVATION_NOTE = f"Adaeze hid under the table again {HOSTILE}"
OTHER_OBSERVATION_NOTE = "Bartholomew threw the sand tray"
SESSION_NOTE = "Adaeze talked about home for the first time <img src=x onerror=alert(1)>"
GROUP_SESSION_NOTE = "The group built a den together; Adaeze led the planning"
OTHER_SESSION_NOTE = "Bartholomew spoke about his new baby sister"
GROUP_NAME = "Nurture group Tuesday"
PARENT = "Priya Okafor-Parent"
BASIS_REASON = "Section 47 enquiry opened by the local authority"
POLICY = "Children Act 1989 s47"


@dataclass
class Platform:
    assessment: httpx.AsyncClient
    consent: httpx.AsyncClient
    planning: httpx.AsyncClient
    reporting: httpx.AsyncClient
    issuer: DevIssuer
    peers: dict[str, Any]
    consent_settings: Any
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def as_(self, role: Role, subject: str | None = None, trust_id: uuid.UUID | None = None) -> dict[str, str]:
        token = self.issuer.issue(subject or f"{role.value}-1", [role], trust_id or self.trust_id, [self.academy_id])
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def platform(stack_settings, topic_prefix, tmp_path) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    settings = settings_for(stack_settings, topic_prefix, tmp_path)
    async with AsyncExitStack() as stack:
        services = await four_services(stack, settings, DELIVERY)
        c = services.clients
        consent = services.apps["consent"].state.runtime.deps
        yield Platform(c["assessment"], c["consent"], c["planning"], c["reporting"], DevIssuer(settings),
                       consent.subject_access_transports, consent.settings)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    hook = Receiver(url=f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    server = uvicorn.Server(uvicorn.Config(hook, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return bool(server.started)

    await eventually(started)
    yield hook
    server.should_exit = True
    await task


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else response


def now() -> str:
    return datetime.now(UTC).isoformat()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@dataclass
class Story:
    """What the story wrote, to compare the export with."""

    child: uuid.UUID
    other: uuid.UUID
    upns: tuple[str, str]
    ratings: list[dict[str, Any]] = field(default_factory=list)
    assessment_id: str = ""
    scores: list[dict[str, Any]] = field(default_factory=list)
    pupil_record: dict[str, Any] = field(default_factory=dict)
    individual_plan: dict[str, Any] = field(default_factory=dict)
    group_plan: dict[str, Any] = field(default_factory=dict)
    other_plan: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)  # which -> session_id
    grant: dict[str, Any] = field(default_factory=dict)
    basis: dict[str, Any] = field(default_factory=dict)
    shares: dict[str, dict[str, Any]] = field(default_factory=dict)  # category -> share response
    agencies: dict[str, dict[str, Any]] = field(default_factory=dict)


async def write_the_story(p: Platform, receiver: Receiver) -> Story:
    senco, trust_admin, practitioner = p.as_(Role.senco), p.as_(Role.trust_admin), p.as_(Role.practitioner)
    ok(await p.assessment.put("/trust", json={"name": "Riverbend Learning Trust"}, headers=trust_admin))
    assert (await p.assessment.put(f"/academies/{p.academy_id}", json={"name": "Oak Hill"},
                                   headers=trust_admin)).is_success

    # The roster: the child and another child of the same class.
    numbers = (upn(), upn())
    rows = [f"{numbers[i]},{who['surname']},{who['forename']},{date.fromisoformat(who['dob']):%d/%m/%Y},"
            f"{who['gender']},4,4B," for i, who in enumerate((CHILD, OTHER))]
    imported = ok(await p.assessment.post(f"/academies/{p.academy_id}/roster-imports", headers={
        **senco, "Content-Type": "text/csv"}, content=("\r\n".join([HEADER, *rows]) + "\r\n").encode()))
    child, other = (uuid.UUID(str(e["pupil_id"])) for e in imported["enrolled"])
    story = Story(child, other, numbers)
    ok(await p.assessment.post(f"/academies/{p.academy_id}/groups", headers=senco,
                               json={"name": GROUP_NAME, "pupil_ids": [str(child), str(other)]}), 201)

    # Both are assessed, each with a note on one rating.
    for pupil, note in ((child, OBSERVATION_NOTE), (other, OTHER_OBSERVATION_NOTE)):
        started = ok(await p.assessment.post("/assessments", headers=senco, json={
            "pupil_id": str(pupil), "strands": ["being"], "framework_version": SAMPLE}), 201)
        assessment_id = started["assessments"][0]["assessment_id"]
        ratings = [{"pupil_id": str(pupil), "statement_id": s, "level": level.value, "assessment_id": assessment_id}
                   for s, level in levels_at(1).items()]
        ratings[0]["note"] = note
        ok(await p.assessment.post("/observations/bulk", headers=senco,
                                   json={"observed_at": now(), "ratings": ratings}), 201)
        ok(await p.assessment.post(f"/assessments/{assessment_id}/complete", headers=senco))
        if pupil == child:
            story.ratings, story.assessment_id = ratings, assessment_id
    story.scores = ok(await p.assessment.get(f"/assessments/{story.assessment_id}", headers=senco))["scores"]

    # Plans: the child's own, a group plan with the other child (reviewed), and the other child's own.
    async def suggestion(pupil: uuid.UUID) -> Any:  # planning learns the scores from StrandScored, on Kafka
        response = await p.planning.get(f"/pupils/{pupil}/suggestion", headers=practitioner)
        return response.json() if response.status_code == 200 and response.json().get("based_on") else None

    suggested = await eventually(lambda: suggestion(child), timeout=90)
    await eventually(lambda: suggestion(other), timeout=90)

    def plan(kind: str, pupils: list[uuid.UUID], activities: list[str]) -> dict[str, Any]:
        return {"kind": kind, "pupil_ids": [str(x) for x in pupils], "strand": suggested["strand"],
                "targets": [t["statement_id"] for t in suggested["targets"]][:2], "activities": activities,
                "frequency": {"sessions_per_week": 2, "minutes": 30, "setting": "small group"},
                "review_on": str(TODAY + timedelta(weeks=6))}

    for name, body in (("individual_plan", plan("individual", [child], ["Feelings fan", "Worry monster"])),
                       ("group_plan", plan("group", [child, other], ["Den building", "Turn-taking game"])),
                       ("other_plan", plan("individual", [other], ["Sand tray calm-down"]))):
        drafted = ok(await p.planning.post("/plans", headers=practitioner, json=body), 201)
        ok(await p.planning.post(f"/plans/{drafted['plan_id']}/issue", json={"practitioner_id": "practitioner-1"},
                                 headers=practitioner))
        setattr(story, name, {**body, "plan_id": drafted["plan_id"]})
    for which, plan_id, note in (("individual", story.individual_plan["plan_id"], SESSION_NOTE),
                                 ("group", story.group_plan["plan_id"], GROUP_SESSION_NOTE),
                                 ("other", story.other_plan["plan_id"], OTHER_SESSION_NOTE)):
        logged = ok(await p.planning.post(f"/plans/{plan_id}/sessions", headers=practitioner, json={
            "held_on": str(TODAY), "minutes": 30, "staff_present": ["practitioner-1"],
            "activities_done": ["Den building"] if which == "group" else [], "note": note}), 201)
        story.sessions[which] = logged["session_id"]
    ok(await p.planning.post(f"/plans/{story.group_plan['plan_id']}/review", headers=practitioner))

    # Consent: a parent's grant to share with CAMHS, a lawful basis for social care, a date of birth.
    async def known_to_consent() -> bool:  # from PupilEnrolled, on Kafka
        return (await p.consent.get(f"/pupils/{child}/consents", headers=senco)).status_code == 200

    await eventually(known_to_consent, timeout=90)
    story.grant = ok(await p.consent.post(f"/pupils/{child}/consents", headers=senco, json={
        "purpose": "share_camhs", "decision": "granted", "decided_at": now(), "method": "paper",
        "given_by": {"name": PARENT, "relationship": "mother"}}), 201)
    story.basis = ok(await p.consent.post(f"/pupils/{child}/lawful-bases", headers=senco, json={
        "agency_category": "social_care", "basis": "legal_obligation", "reason": BASIS_REASON,
        "policy_reference": POLICY, "decided_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "valid_until": (datetime.now(UTC) + timedelta(days=14)).isoformat()}), 201)
    ok(await p.consent.put(f"/pupils/{child}/retention-clock", headers=senco, json={"date_of_birth": CHILD["dob"]}))

    # Shares: the report to CAMHS (consent) and to children's social care (legal obligation), as of
    # the child's assessment (once reporting's read models have it, from Kafka).
    async def report_id() -> Any:
        async def scored() -> Any:
            response = await p.reporting.get(f"/pupils/{child}/profile", headers=senco)
            latest = response.json().get("latest_assessment_id") if response.status_code == 200 else None
            return latest if str(latest) == str(story.assessment_id) else None

        return await eventually(scored, timeout=90)

    for category, organisation in (("camhs", "North CAMHS"), ("social_care", "Northshire Children's Services")):
        story.agencies[category] = ok(await p.reporting.post("/sharing/agencies", headers=trust_admin, json={
            "category": category, "organisation": organisation, "endpoint_url": receiver.url}), 201)
        story.shares[category] = ok(await p.reporting.post("/sharing/shares", headers=senco, json={
            "agency_id": story.agencies[category]["agency_id"], "pupil_id": str(child), "document_kind": "report",
            "document_id": str(await report_id())}), 201)
        assert story.shares[category]["status"] == "accepted", story.shares[category]

    async def delivered() -> bool:
        states = [ok(await p.reporting.get(f"/sharing/deliveries/{s['delivery_id']}", headers=senco))["status"]
                  for s in story.shares.values()]
        return all(state == "delivered" for state in states)

    await eventually(delivered, timeout=60)

    # The parent withdraws the CAMHS consent: CAMHS gets a deletion notice.
    ok(await p.consent.post(f"/pupils/{child}/consents/share_camhs/withdrawal", headers=senco, json={
        "given_by": {"name": PARENT, "relationship": "mother"}, "method": "email", "withdrawn_at": now()}), 201)

    async def notice_received() -> bool:
        return any(orjson.loads(r["body"]).get("type", "").endswith("deletion") or
                   "share_ids" in orjson.loads(r["body"]).get("data", {}) for r in receiver.received)

    await eventually(notice_received, timeout=60)

    # A member of staff reads the child's record.
    story.pupil_record = ok(await p.assessment.get(f"/pupils/{child}", headers=senco))
    return story


async def test_the_export_holds_everything_the_story_wrote_and_nothing_of_the_other_child(
    platform: Platform, receiver: Receiver,
) -> None:
    p = platform
    story = await write_the_story(p, receiver)
    dpo = p.as_(Role.dpo)
    child = story.child

    async def in_the_ledger() -> Any:  # the ledger consumes flourish.audit; the read is listed once it has
        reads = ok(await p.reporting.get(f"/audit/pupils/{child}/reads", params={"limit": 200}, headers=dpo))["items"]
        staff_read = any(r["route"] == "/pupils/{pupil_id}" and r["reader"] == "senco-1" for r in reads)
        notice = await p.reporting.get(f"/pupils/{child}/subject-access", headers=dpo)
        return staff_read and notice.json()["services"]["reporting"]["deletion_notices"]

    await eventually(in_the_ledger, timeout=90, interval=0.5)
    response = await p.consent.get(f"/pupils/{child}/subject-access", headers=dpo)
    export = ok(response)
    assert response.headers["cache-control"] == "no-store"
    assert export["complete"] is True and export["missing_parts"] == [], export["missing_parts"]
    assert set(export["services"]) == {"consent", *PEERS}
    parts = export["services"]
    assert all(parts[name]["status"] == "provided" for name in parts)

    # Assessment: the roster record opened with the pupil's key, equal to the service's own answer.
    a = parts["assessment"]
    assert a["personal_data"] == {k: story.pupil_record[k] for k in a["personal_data"]}
    assert a["personal_data"]["upn"] == story.upns[0]
    assert (a["personal_data"]["legal_surname"], a["personal_data"]["legal_forename"]) == (CHILD["surname"], CHILD["forename"])
    assert a["personal_data"]["date_of_birth"] == CHILD["dob"] and a["personal_data"]["gender"] == CHILD["gender"]
    assert a["roster"]["class_name"] == "4B" and a["roster"]["academy_id"] == str(p.academy_id)
    assert [(g["name"], g["other_pupils"]) for g in a["groups"]] == [(GROUP_NAME, "1 other pupil")]
    # Observations: every rating written, with its level, and the note on the one that had it.
    got = {(o["statement_id"], o["level"], o["assessment_id"], o["note"]) for o in a["observations"]}
    assert got == {(r["statement_id"], r["level"], r["assessment_id"], r.get("note")) for r in story.ratings}
    [assessment] = a["assessments"]
    assert assessment["assessment_id"] == story.assessment_id and assessment["completed_at"] is not None
    assert {s["strand"]: s["strand_percent"] for s in assessment["scores"]} == \
        {s["strand"]: s["strand_percent"] for s in story.scores}

    # Planning: the child's plans with their targets and activities; the group plan's other child counted.
    pl = parts["planning"]
    plans = {x["plan_id"]: x for x in pl["plans"]}
    assert set(plans) == {story.individual_plan["plan_id"], story.group_plan["plan_id"]}
    for written in (story.individual_plan, story.group_plan):
        held = plans[written["plan_id"]]
        assert (held["kind"], held["targets"], held["activities"], held["strand"]) == \
            (written["kind"], written["targets"], written["activities"], written["strand"])
        assert held["frequency"] == {"sessions_per_week": 2, "minutes": 30, "setting": "small group"}
        assert held["review_on"] == written["review_on"]
    assert plans[story.individual_plan["plan_id"]]["other_pupils"] is None
    group = plans[story.group_plan["plan_id"]]
    assert group["other_pupils"] == "1 other pupil" and group["status"] == "reviewed"
    assert group["review"]["outcome"] is not None and "pupil_id" not in group["review"]["outcome"]
    sessions = {s["session_id"]: s for s in pl["sessions"]}
    assert set(sessions) == {story.sessions["individual"], story.sessions["group"]}
    individual, grouped = sessions[story.sessions["individual"]], sessions[story.sessions["group"]]
    assert (individual["note"], individual["note_review"], individual["other_pupils"]) == (SESSION_NOTE, None, None)
    assert grouped["note"] == GROUP_SESSION_NOTE and grouped["other_pupils"] == "1 other pupil"
    assert grouped["note_review"] and grouped["activities_done"] == ["Den building"]
    assert individual["minutes"] == 30 and individual["held_on"] == str(TODAY)

    # Consent: the decisions with the parent named, the basis with its reason and policy, retention.
    c = parts["consent"]
    assert c["roster"]["date_of_birth"] == CHILD["dob"]
    decisions = {d["decision_id"]: d for d in c["consent_decisions"]}
    grant = decisions[story.grant["decision_id"]]
    assert grant["given_by"] == {"name": PARENT, "relationship": "mother"} and grant["purpose"] == "share_camhs"
    basis = decisions[story.basis["decision_id"]]
    assert (basis["reason"], basis["policy_reference"], basis["lawful_basis"]) == (BASIS_REASON, POLICY, "legal_obligation")
    assert any(d["kind"] == "withdrawal" or "withdraw" in d["kind"] for d in decisions.values()), decisions
    assert c["retention"] and all("due_on" in r and r["description"] for r in c["retention"])
    assert {x["purpose"] for x in c["consent_now"]} >= {"share_camhs", "share_social_care", "online_processing"}

    # Reporting: every share with its recipient, date, basis and what was sent; the notice; the reads.
    r = parts["reporting"]
    shares = {s["share_id"]: s for s in r["shares"]}
    assert set(shares) == {str(s["share_id"]) for s in story.shares.values()}
    camhs, social = (shares[str(story.shares[k]["share_id"])] for k in ("camhs", "social_care"))
    assert camhs["recipient"] == {"agency_id": str(story.agencies["camhs"]["agency_id"]),
                                  "agency_name": "North CAMHS", "category": "camhs"}
    assert social["recipient"]["agency_name"] == "Northshire Children's Services"
    assert camhs["basis"]["lawful_basis"] == "consent" and camhs["basis"]["consent_obtained"] is True
    assert (social["basis"]["lawful_basis"], social["basis"]["policy_reference"], social["basis"]["consent_obtained"]) \
        == ("legal_obligation", POLICY, False)
    for share, category in ((camhs, "camhs"), (social, "social_care")):
        assert share["what_was_sent"]["document_kind"] == "report"
        assert share["what_was_sent"]["document_sha256"] == story.shares[category]["document_sha256"]
        assert share["delivery"]["status"] == "delivered" and datetime.fromisoformat(share["shared_at"])
        assert share["shared_by"] == "senco-1"
    [notice] = r["deletion_notices"]
    assert notice["recipient"]["agency_name"] == "North CAMHS" and notice["shares"] == [camhs["share_id"]]
    assert any(x["reader"] == "senco-1" and x["route"] == "/pupils/{pupil_id}" and
               x["service"] == "/flourish/assessment" and x["data_categories"] == ["roster_personal_data"]
               for x in r["reads"]), r["reads"]
    assert r["reads_complete"] is True and r["read_models"] is not None

    # The other child appears nowhere: not their id, names, UPN, date of birth, notes or sessions.
    html = await p.consent.get(f"/pupils/{child}/subject-access", params={"format": "html"}, headers=dpo)
    negotiated = await p.consent.get(f"/pupils/{child}/subject-access", headers={**dpo, "Accept": "text/html"})
    as_text = response.text
    for absent in (str(story.other), OTHER["surname"], OTHER["forename"], story.upns[1], OTHER["dob"],
                   OTHER_OBSERVATION_NOTE, OTHER_SESSION_NOTE, story.other_plan["plan_id"], story.sessions["other"],
                   "Sand tray calm-down"):
        assert absent not in as_text, f"{absent!r} is in the JSON export"
        assert absent not in html.text, f"{absent!r} is in the HTML export"

    # The HTML page parses, shows every part, and hostile values are text, never markup.
    for page in (html, negotiated):
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
    parser = _Page()
    parser.feed(html.text)
    parser.close()
    shown = "".join(parser.text)
    assert parser.tags.isdisjoint({"script", "img"}), parser.tags
    assert "&lt;script&gt;" in html.text
    for present in (OBSERVATION_NOTE, SESSION_NOTE, GROUP_SESSION_NOTE, PARENT, CHILD["surname"], story.upns[0],
                    "North CAMHS", POLICY, BASIS_REASON, story.shares["camhs"]["document_sha256"], GROUP_NAME):
        assert present in shown, f"{present!r} is not on the HTML page"
    assert "incomplete" not in shown

    # Every part's read is in the ledger, under the route each service serves it on.
    async def every_part_recorded() -> bool:
        reads = ok(await p.reporting.get(f"/audit/pupils/{child}/reads", params={"limit": 200}, headers=dpo))["items"]
        found = {x["service"] for x in reads if x["route"] == "/pupils/{pupil_id}/subject-access"
                 and x["data_categories"] == ["subject_access_export"] and x["reader"] == "dpo-1"}
        return found >= {f"/flourish/{name}" for name in ("consent", *PEERS)}

    await eventually(every_part_recorded, timeout=60, interval=0.5)


async def test_only_a_dpo_of_the_pupils_trust_gets_an_export_and_a_failed_part_is_named(
    platform: Platform, stack_settings: Any,
) -> None:
    p = platform
    senco = p.as_(Role.senco)
    numbers = (upn(),)
    ok(await p.assessment.put("/trust", json={"name": "Riverbend"}, headers=p.as_(Role.trust_admin)))
    assert (await p.assessment.put(f"/academies/{p.academy_id}", json={"name": "Oak Hill"},
                                   headers=p.as_(Role.trust_admin))).is_success
    imported = ok(await p.assessment.post(f"/academies/{p.academy_id}/roster-imports", headers={
        **senco, "Content-Type": "text/csv"}, content=f"{HEADER}\r\n{numbers[0]},Pryce,Nia,01/02/2017,F,4,4C,\r\n".encode()))
    [child] = [uuid.UUID(str(e["pupil_id"])) for e in imported["enrolled"]]

    async def known_everywhere() -> bool:  # consent, planning and reporting learn of the pupil from PupilEnrolled
        c = await p.consent.get(f"/pupils/{child}/consents", headers=senco)
        pl = await p.planning.get(f"/pupils/{child}/session-totals", headers=senco)
        r = await p.reporting.get(f"/pupils/{child}/profile", headers=senco)
        return c.status_code == 200 and pl.status_code == 200 and r.status_code == 200

    await eventually(known_everywhere, timeout=90)
    clients = {"consent": p.consent, "assessment": p.assessment, "planning": p.planning}
    path = f"/pupils/{child}/subject-access"

    # Staff who are not the DPO: 403 from the export and from every part asked directly.
    for role in (Role.senco, Role.practitioner, Role.trust_admin, Role.auditor):
        for name, client in clients.items():
            refused = await client.get(path, headers=p.as_(role))
            assert refused.status_code == 403, (role, name, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
        assert (await p.reporting.get(path, headers=p.as_(role))).status_code == 403

    # Each part, asked directly by the DPO, is never kept by a cache either.
    for name, client in {"assessment": p.assessment, "planning": p.planning, "reporting": p.reporting}.items():
        direct = await client.get(path, headers=p.as_(Role.dpo))
        assert direct.status_code == 200 and direct.headers["cache-control"] == "no-store", (name, direct.text)
        assert set(direct.json()["services"]) == {name}

    # Another trust's DPO: 404 from the export and from every part (nothing says the pupil exists).
    elsewhere = p.as_(Role.dpo, "dpo-elsewhere", trust_id=uuid.uuid4())
    for name, client in {**clients, "reporting": p.reporting}.items():
        hidden = await client.get(path, headers=elsewhere)
        assert hidden.status_code == 404, (name, hidden.text)
        assert hidden.headers["content-type"].startswith("application/problem+json")

    # A part that cannot be reached, and one that answers with a problem, are named with what
    # happened; the export says it is incomplete, in JSON and on the HTML page.
    dpo = p.as_(Role.dpo)
    original = dict(p.peers)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    p.peers["planning"] = httpx.MockTransport(refuse)
    p.peers["reporting"] = httpx.MockTransport(lambda request: httpx.Response(
        503, json={"title": "Service Unavailable", "detail": "the ledger is catching up", "status": 503},
        headers={"content-type": "application/problem+json"}))
    try:
        export = ok(await p.consent.get(path, headers=dpo))
        page = await p.consent.get(path, params={"format": "html"}, headers=dpo)
    finally:
        p.peers.clear()
        p.peers.update(original)
    assert export["complete"] is False and export["missing_parts"] == ["planning", "reporting"]
    assert export["services"]["planning"] == {"status": "unreachable", "error_type": "ConnectError"}
    assert export["services"]["reporting"] == {"status": "not_provided", "http_status": 503,
                                               "title": "Service Unavailable", "detail": "the ledger is catching up"}
    assert export["services"]["assessment"]["status"] == "provided"
    assert export["services"]["assessment"]["personal_data"]["upn"] == numbers[0]
    assert "This export is incomplete" in page.text and "the ledger is catching up" in page.text

    # Restored, the planning part is provided again (the pupil has no plans: empty, not missing).
    again = ok(await p.consent.get(path, headers=dpo))
    assert again["services"]["planning"]["status"] == "provided" and again["services"]["planning"]["plans"] == []
    assert again["complete"] is True

    # A service left out of FLOURISH_CONSENT_SUBJECT_ACCESS_PEERS is named, not silently missing;
    # and asking for consent's part alone says the others were not asked.
    configured = p.consent_settings.consent.subject_access_peers
    url = configured.pop("reporting")
    try:
        unconfigured = ok(await p.consent.get(path, headers=dpo))
    finally:
        configured["reporting"] = url
    assert unconfigured["services"]["reporting"] == {"status": "not_configured"}
    assert unconfigured["complete"] is False and unconfigured["missing_parts"] == ["reporting"]
    alone = ok(await p.consent.get(path, params={"include_services": "false"}, headers=dpo))
    assert {name: part["status"] for name, part in alone["services"].items()} == {
        "consent": "provided", "assessment": "not_asked", "planning": "not_asked", "reporting": "not_asked"}
    assert alone["complete"] is False
