"""Every read and admin fact the platform records, proved through the public API.

The four services run in process on the real PostgreSQL and Kafka (topics of the test's own). The
test does what staff, a DPO, an admin, a service and an operator do — read a class list, a pupil's
observations and notes, a session note, a profile, an intervention report, a receipt, a
subject-access export; a service fetches a data key; an admin loads a framework, registers an
agency, sets a retention policy; a DPO erases a pupil; an operator exports the ledger — and then
finds each one's entry in the ledger through `GET /audit/...`: who, which pupil, which data,
which route. Nothing is built by hand. The table below must cover every read category and admin
action the code knows (shared.events.audit), so a new one cannot be added without proving it here;
and every GET route of the four services must say whether it records a read (and of what) or why
it returns nothing personal in clear.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from services.assessment.app import app as assessment_app
from services.assessment.framework_store import SAMPLE_PATH
from services.consent.app import app as consent_app
from services.planning.app import app as planning_app
from services.reporting.app import app as reporting_app
from services.reporting.audit.cli import app as audit_cli
from services.reporting.sharing import SharingSettings
from shared.auth import DevIssuer, Role
from shared.events.audit import AdminAction, ReadCategory
from shared.tenancy import across_trusts
from tests.integration.assessment.helpers import upn
from tests.integration.kernel.helpers import eventually
from tests.integration.services.in_process import four_services, settings_for
from tests.unit.assessment.report import levels_at

SAMPLE = "flourish-sample-1"
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group,Leaving Date"
TODAY = date.today()
DELIVERY = SharingSettings(allowed_private_networks=["127.0.0.1/32"], max_attempts=1, poll_interval_s=0.05)
OBSERVATION_NOTE = "Zebedee hid under the table again"
SESSION_NOTE = "Zebedee talked about home for the first time"
PARENT = "Priya Parentname"

# Every GET route of the four services: the read it records, or why it returns nothing personal in
# clear (pseudonymous ids, scores, codes and counts are not names, dates of birth, UPNs, notes,
# parent details or documents about a child).
RECORDS_A_READ: dict[tuple[str, str], ReadCategory] = {
    ("assessment", "/pupils/{pupil_id}"): ReadCategory.ROSTER_PERSONAL_DATA,
    ("assessment", "/pupils/{pupil_id}/attributes"): ReadCategory.PUPIL_ATTRIBUTES,
    ("assessment", "/classes/{class_id}/pupils"): ReadCategory.CLASS_LIST,
    ("assessment", "/pupils/{pupil_id}/observations"): ReadCategory.OBSERVATIONS,
    ("assessment", "/classes/{class_id}/profile"): ReadCategory.CLASS_PROFILE,
    ("assessment", "/screenings/{screening_id}/profile"): ReadCategory.CLASS_PROFILE,
    ("planning", "/sessions/{session_id}/note"): ReadCategory.SESSION_NOTE,
    ("reporting", "/pupils/{pupil_id}/profile"): ReadCategory.PUPIL_PROFILE,
    ("reporting", "/pupils/{pupil_id}/intervention-report"): ReadCategory.INTERVENTION_REPORT,
    ("consent", "/consent-decisions/{decision_id}/receipt"): ReadCategory.CONSENT_RECEIPT,
    ("consent", "/pupils/{pupil_id}/subject-access"): ReadCategory.SUBJECT_ACCESS_EXPORT,
    # Each service's part of the export (tests/integration/subject_access proves their entries).
    ("assessment", "/pupils/{pupil_id}/subject-access"): ReadCategory.SUBJECT_ACCESS_EXPORT,
    ("planning", "/pupils/{pupil_id}/subject-access"): ReadCategory.SUBJECT_ACCESS_EXPORT,
    ("reporting", "/pupils/{pupil_id}/subject-access"): ReadCategory.SUBJECT_ACCESS_EXPORT,
    ("consent", "/pupils/{pupil_id}/data-key"): ReadCategory.DATA_KEY,
}
NOTHING_PERSONAL_IN_CLEAR: dict[tuple[str, str], str] = {
    **{(service, path): "the service's health, metrics, or the caller's own token"
       for service in ("assessment", "consent", "planning", "reporting")
       for path in ("/healthz", "/readyz", "/metrics", "/whoami")},
    ("reporting", "/ops"): "the ops page: counts",
    ("reporting", "/ops.json"): "lag, dead letters, backlog and failures: counts",
    ("reporting", "/ops/summary"): "the same counts, for a signed-in operator",
    ("assessment", "/framework-schema"): "a JSON Schema",
    ("assessment", "/frameworks"): "framework versions",
    ("assessment", "/frameworks/{version}"): "a framework's statements",
    ("assessment", "/academies"): "academies' names",
    ("assessment", "/academies/{academy_id}/classes"): "class names",
    ("assessment", "/academies/{academy_id}/groups"): "group names",
    ("assessment", "/groups/{group_id}"): "a group's name and pseudonymous pupil ids",
    ("assessment", "/assessments/{assessment_id}"): "statement ids and scores under a pseudonymous id",
    ("assessment", "/pupils/{pupil_id}/assessments"): "assessment ids and scores under a pseudonymous id",
    ("assessment", "/pupils/{pupil_id}/progress"): "percentages under a pseudonymous id",
    ("assessment", "/screenings/{screening_id}"): "assessment ids and pseudonymous pupil ids",
    ("planning", "/pupils/{pupil_id}/suggestion"): "suggested targets from the framework",
    ("planning", "/academies/{academy_id}/classes/{class_id}/suggestion"): "suggested targets from the framework",
    ("planning", "/plans"): "plans: pseudonymous pupil ids, statement ids, activities, staff ids",
    ("planning", "/plans/{plan_id}"): "a plan: pseudonymous pupil ids, statement ids, activities, staff ids",
    ("planning", "/plans/{plan_id}/sessions"): "sessions without their notes: dates, minutes, ids",
    ("planning", "/plans/{plan_id}/session-totals"): "counts",
    ("planning", "/pupils/{pupil_id}/session-totals"): "counts",
    ("reporting", "/academies/{academy_id}/dashboard"): "counts per strand",
    ("reporting", "/trust/dashboard"): "suppressed counts per academy",
    ("reporting", "/sharing/agencies"): "agencies, not pupils",
    ("reporting", "/sharing/deliveries/{delivery_id}"): "a delivery's status, without its payload",
    ("reporting", "/sharing/agencies/{agency_id}/deliveries"): "delivery attempts: times, outcomes, status codes",
    ("reporting", "/sharing/undeliverable"): "deletion notices owed: pseudonymous pupil and share ids, agencies, reasons",
    ("reporting", "/audit/public-key"): "a public key",
    ("consent", "/pupils/{pupil_id}/consents"): "each purpose's status: codes and dates, no names",
    ("consent", "/pupils/{pupil_id}/opt-out"): "the opt-out's decision id and dates, whether a DPO kept the data",
    ("consent", "/pupils/{pupil_id}/consents/history"): "decisions without the parent's name or evidence",
    ("consent", "/sharing-decisions"): "allow or deny, and the basis's codes",
    ("consent", "/academies/{academy_id}/retention-policies"): "policies",
    ("consent", "/academies/{academy_id}/retention/preview"): "pseudonymous pupil ids and due dates",
    ("consent", "/pupils/{pupil_id}/erasure"): "the non-personal record of an erasure",
    ("consent", "/pupils/{pupil_id}/family-contact"): "the family's email sealed with the pupil's key (services only; "
                                                     "the key's release is the audited read)",
    ("reporting", "/sharing/shares/{share_id}/notice"): "a share's notice to the family: what, to whom, why, basis, "
                                                        "under a pseudonymous id",
}
# The audit API's own questions are recorded as `audit_queried` (test_reporting_ledger.py).
AUDIT_QUERIES = "/audit/"


@dataclass
class Platform:
    assessment: httpx.AsyncClient
    consent: httpx.AsyncClient
    planning: httpx.AsyncClient
    reporting: httpx.AsyncClient
    issuer: DevIssuer
    apps: dict[str, Any]
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def as_(self, role: Role, subject: str | None = None) -> dict[str, str]:
        token = self.issuer.issue(subject or f"{role.value}-1", [role], self.trust_id, [self.academy_id])
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def platform(stack_settings, topic_prefix, tmp_path) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    settings = settings_for(stack_settings, topic_prefix, tmp_path)
    async with AsyncExitStack() as stack:
        services = await four_services(stack, settings, DELIVERY)
        c = services.clients
        yield Platform(c["assessment"], c["consent"], c["planning"], c["reporting"], DevIssuer(settings), services.apps)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else response


def now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Expected:
    """A ledger entry one action must have left: asked for by action (and pupil), matched on a subset."""

    fact: str  # the read category or admin action this row proves
    action: str
    fields: dict[str, Any]


def read(category: ReadCategory, pupil: uuid.UUID, actor: str, service: str, route: str,
         categories: list[str] | None = None) -> Expected:
    return Expected(category.value, "personal_data_read", {
        "kind": "access", "pupil_id": str(pupil), "actor": actor, "source": f"/flourish/{service}",
        "details": {"data_categories": categories or [category.value], "route": route}})


def admin(action: AdminAction | str, actor: str, target_kind: str, **more: Any) -> Expected:
    return Expected(str(action), str(action), {"kind": "admin", "actor": actor,
                                              "details": {"target_kind": target_kind}, **more})


async def test_every_read_and_admin_action_done_through_the_api_is_found_in_the_ledger(
    platform: Platform, engine: Any, stack_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
) -> None:
    p = platform
    senco, dpo, trust_admin = p.as_(Role.senco), p.as_(Role.dpo), p.as_(Role.trust_admin)
    expected: list[Expected] = []

    # An admin names the trust and loads a framework version of its own.
    ok(await p.assessment.put("/trust", json={"name": "Riverbend Learning Trust"}, headers=trust_admin))
    assert (await p.assessment.put(f"/academies/{p.academy_id}", json={"name": "Oak Hill"},
                                   headers=trust_admin)).is_success
    document = yaml.safe_load(SAMPLE_PATH.read_text())
    document["version"] = f"trust-bank-{uuid.uuid4().hex[:6]}"
    ok(await p.assessment.post("/frameworks", content=yaml.safe_dump(document),
                               headers={**trust_admin, "Content-Type": "application/yaml"}), 201)
    expected.append(admin(AdminAction.FRAMEWORK_LOADED, "trust_admin-1", "framework",
                          details={"target_kind": "framework", "target_id": document["version"], "outcome": "created"}))

    # A roster: enrolling seals each pupil's data under a key the assessment service fetches from consent.
    numbers = [upn(), upn(), upn()]

    def roster(left: str = "") -> bytes:  # `left`: the third pupil's leaving date
        return "\r\n".join([HEADER, *(f"{n},Zebedee{i},Forename{i},03/04/2017,F,4,4B,{left if i == 2 else ''}"
                                      for i, n in enumerate(numbers))]).encode() + b"\r\n"

    csv = {**senco, "Content-Type": "text/csv"}
    imported = ok(await p.assessment.post(f"/academies/{p.academy_id}/roster-imports", content=roster(), headers=csv))
    child, other, leaver = (uuid.UUID(str(e["pupil_id"])) for e in imported["enrolled"])
    ok(await p.assessment.post(f"/academies/{p.academy_id}/roster-imports", headers=csv,
                               content=roster(f"{TODAY - timedelta(days=40):%d/%m/%Y}")))
    expected.append(read(ReadCategory.DATA_KEY, child, "service:assessment", "consent", "/pupils/{pupil_id}/data-key"))
    [klass] = ok(await p.assessment.get(f"/academies/{p.academy_id}/classes", headers=senco))["items"]

    ok(await p.assessment.get(f"/pupils/{child}", headers=senco))
    expected.append(read(ReadCategory.ROSTER_PERSONAL_DATA, child, "senco-1", "assessment", "/pupils/{pupil_id}"))
    listed = ok(await p.assessment.get(f"/classes/{klass['class_id']}/pupils", headers=senco))
    assert {i["name"] for i in listed["items"]} >= {"Forename0 Zebedee0", "Forename1 Zebedee1"}, listed
    for pupil in (child, other):
        expected.append(read(ReadCategory.CLASS_LIST, pupil, "senco-1", "assessment", "/classes/{class_id}/pupils"))

    # The child is assessed, with a note on one rating; staff read the observations and the class profile.
    started = ok(await p.assessment.post("/assessments", headers=senco, json={
        "pupil_id": str(child), "strands": ["being"], "framework_version": SAMPLE}), 201)
    assessment_id = started["assessments"][0]["assessment_id"]
    ratings = [{"pupil_id": str(child), "statement_id": s, "level": level.value, "assessment_id": assessment_id}
               for s, level in levels_at(1).items()]
    ratings[0]["note"] = OBSERVATION_NOTE
    ok(await p.assessment.post("/observations/bulk", headers=senco, json={"observed_at": now(), "ratings": ratings}), 201)
    ok(await p.assessment.post(f"/assessments/{assessment_id}/complete", headers=senco))
    observations = ok(await p.assessment.get(f"/pupils/{child}/observations", headers=senco))
    assert OBSERVATION_NOTE in {o["note"] for o in observations["items"]}
    expected.append(read(ReadCategory.OBSERVATIONS, child, "senco-1", "assessment", "/pupils/{pupil_id}/observations",
                         categories=["observations", "observation_notes"]))
    ok(await p.assessment.get(f"/classes/{klass['class_id']}/profile", headers=senco))
    expected.append(read(ReadCategory.CLASS_PROFILE, other, "senco-1", "assessment", "/classes/{class_id}/profile"))

    # A plan runs; a session with a note is logged and its note read.
    async def suggestion() -> Any:  # planning learns the scores from StrandScored, on Kafka
        response = await p.planning.get(f"/pupils/{child}/suggestion", headers=p.as_(Role.practitioner))
        body = response.json() if response.status_code == 200 else {}
        return body if assessment_id in [str(a) for a in body.get("based_on", [])] else None

    suggested = await eventually(suggestion, timeout=90)
    practitioner = p.as_(Role.practitioner)
    draft = ok(await p.planning.post("/plans", headers=practitioner, json={
        "kind": "individual", "pupil_ids": [str(child)], "strand": suggested["strand"],
        "targets": [t["statement_id"] for t in suggested["targets"]],
        "activities": [a["activity"] for a in suggested["activities"]],
        "frequency": {k: suggested["frequency"][k] for k in ("sessions_per_week", "minutes", "setting")},
        "review_on": str(TODAY + timedelta(weeks=6))}), 201)
    ok(await p.planning.post(f"/plans/{draft['plan_id']}/issue", json={"practitioner_id": "practitioner-1"},
                             headers=practitioner))
    session = ok(await p.planning.post(f"/plans/{draft['plan_id']}/sessions", headers=practitioner, json={
        "held_on": str(TODAY), "minutes": 30, "staff_present": ["practitioner-1"], "note": SESSION_NOTE}), 201)
    assert ok(await p.planning.get(f"/sessions/{session['session_id']}/note", headers=practitioner))["note"] == SESSION_NOTE
    expected.append(read(ReadCategory.SESSION_NOTE, child, "practitioner-1", "planning", "/sessions/{session_id}/note"))

    # The reporting service's profile and intervention report, once its read models have the scores.
    async def reported() -> Any:
        response = await p.reporting.get(f"/pupils/{child}/intervention-report", headers=senco)
        return response if response.status_code == 200 else None

    assert "<html" in (await eventually(reported, timeout=90)).text.lower()
    expected.append(read(ReadCategory.INTERVENTION_REPORT, child, "senco-1", "reporting",
                         "/pupils/{pupil_id}/intervention-report"))
    # The report's gender and year group, read by the reporting service's own client.
    expected.append(read(ReadCategory.PUPIL_ATTRIBUTES, child, "service:reporting", "assessment",
                         "/pupils/{pupil_id}/attributes"))
    ok(await p.reporting.get(f"/pupils/{child}/profile", headers=senco))
    expected.append(read(ReadCategory.PUPIL_PROFILE, child, "senco-1", "reporting", "/pupils/{pupil_id}/profile"))

    # Consent: a decision's receipt (it names the parent) and a subject-access export.
    async def known_to_consent() -> bool:  # from PupilEnrolled, on Kafka
        return (await p.consent.get(f"/pupils/{child}/consents", headers=senco)).status_code == 200

    await eventually(known_to_consent, timeout=90)
    granted = ok(await p.consent.post(f"/pupils/{child}/consents", headers=senco, json={
        "purpose": "share_camhs", "decision": "granted", "decided_at": now(), "method": "paper",
        "given_by": {"name": PARENT, "relationship": "mother"}}), 201)
    receipt = ok(await p.consent.get(f"/consent-decisions/{granted['decision_id']}/receipt", headers=senco))
    assert receipt["given_by"]["name"] == PARENT
    expected.append(read(ReadCategory.CONSENT_RECEIPT, child, "senco-1", "consent",
                         "/consent-decisions/{decision_id}/receipt"))
    ok(await p.consent.get(f"/pupils/{child}/subject-access", params={"include_services": "false"}, headers=dpo))
    expected.append(read(ReadCategory.SUBJECT_ACCESS_EXPORT, child, "dpo-1", "consent", "/pupils/{pupil_id}/subject-access"))

    # Admin actions: an agency registered, a retention policy set, a pupil erased (their key destroyed).
    agency = ok(await p.reporting.post("/sharing/agencies", headers=trust_admin, json={
        "category": "camhs", "organisation": "North CAMHS", "endpoint_url": "http://127.0.0.1:9/hook"}), 201)
    expected.append(admin(AdminAction.AGENCY_REGISTERED, "trust_admin-1", "agency",
                          details={"target_kind": "agency", "target_id": str(agency["agency_id"]), "category": "camhs"}))
    # Its lifecycle (issue 16): a new endpoint, a rotated secret, the agency deactivated.
    agency_path = f"/sharing/agencies/{agency['agency_id']}"
    ok(await p.reporting.put(f"{agency_path}/endpoint", headers=dpo, json={"endpoint_url": "http://127.0.0.1:9/hooks"}))
    expected.append(admin(AdminAction.AGENCY_ENDPOINT_CHANGED, "dpo-1", "agency",
                          details={"target_kind": "agency", "target_id": str(agency["agency_id"])}))
    ok(await p.reporting.post(f"{agency_path}/secret-rotation", headers=trust_admin))
    expected.append(admin(AdminAction.AGENCY_SECRET_ROTATED, "trust_admin-1", "agency",
                          details={"target_kind": "agency", "target_id": str(agency["agency_id"])}))
    ok(await p.reporting.post(f"{agency_path}/deactivation", headers=dpo))
    expected.append(admin(AdminAction.AGENCY_DEACTIVATED, "dpo-1", "agency",
                          details={"target_kind": "agency", "target_id": str(agency["agency_id"]), "shares_stopped": "0"}))
    ok(await p.consent.put(f"/academies/{p.academy_id}/retention-policies/assessments", headers=dpo,
                           json={"counted_from": "leaving_date", "period": {"years": 2}}))
    expected.append(Expected("retention_policy_set", "retention_policy_set", {
        "kind": "admin", "actor": "dpo-1", "details": {"data_category": "assessments", "period_years": 2}}))
    ok(await p.consent.post(f"/pupils/{other}/erasure", json={"reason": "right_to_erasure"}, headers=dpo), 201)
    expected.append(admin(AdminAction.DATA_KEY_DESTROYED, "dpo-1", "data_key", pupil_id=str(other),
                          details={"target_kind": "data_key", "target_id": str(other)}))
    expected.append(Expected("pupil_erased", "pupil_erased", {
        "kind": "erasure", "actor": "dpo-1", "pupil_id": str(other), "details": {"key_destroyed": True}}))

    # Retention erases the leaver when everything held on them expires: their key is destroyed too.
    ok(await p.consent.put(f"/academies/{p.academy_id}/retention-policies/all", headers=dpo,
                           json={"counted_from": "leaving_date", "period": {"days": 30}}))

    async def expired() -> Any:  # consent learns the leaving date from PupilLeft, on Kafka
        run = ok(await p.consent.post("/retention/runs", headers=dpo))
        return [e for e in run["expired"] if e["pupil_id"] == str(leaver)]

    await eventually(expired, timeout=90, interval=0.5)
    expected.append(admin(AdminAction.DATA_KEY_DESTROYED, "retention-scheduler", "data_key", pupil_id=str(leaver)))

    # An operator exports the trust's chain with `flourish audit export`.
    async def in_the_ledger() -> bool:
        async with engine.begin() as conn, across_trusts(conn):
            return bool(await conn.scalar(text("SELECT count(*) FROM reporting.audit_entries WHERE trust_id = :t"),
                                          {"t": p.trust_id}))

    await eventually(in_the_ledger, timeout=60)
    monkeypatch.setenv("DATABASE_URL", stack_settings.database_url)
    exported = await asyncio.to_thread(CliRunner().invoke, audit_cli, [
        "export", "--trust", str(p.trust_id), "-o", str(tmp_path / "trust.jsonl"), "--actor", "operator-7"])
    assert exported.exit_code == 0, exported.output
    expected.append(admin(AdminAction.AUDIT_EXPORTED, "operator-7", "audit_ledger"))

    # Every read category and admin action the code knows has a row above.
    proved = {e.fact for e in expected} | {c for e in expected for c in e.fields.get("details", {}).get("data_categories", [])}
    assert {c.value for c in ReadCategory} <= proved, "a read category no action here proves"
    assert {a.value for a in AdminAction} - set(PROVED_ELSEWHERE) <= proved, "an admin action no action here proves"

    # Each is in the ledger, as the DPO asks for it.
    auditor = p.as_(Role.auditor)
    for row in expected:
        params = {"action": row.action, "limit": 200}
        if "pupil_id" in row.fields:
            params["pupil_id"] = row.fields["pupil_id"]

        async def found(row: Expected = row, params: dict[str, Any] = params) -> bool:
            page = ok(await p.reporting.get("/audit/entries", params=params, headers=auditor))
            return any(matches(entry, row.fields) for entry in page["items"])

        try:
            await eventually(found, timeout=60, interval=0.3)
        except (AssertionError, TimeoutError) as error:
            page = ok(await p.reporting.get("/audit/entries", params=params, headers=auditor))
            raise AssertionError(f"{row.fact}: no entry with {row.fields}; the ledger has {page['items']}") from error

    # And "who read this pupil's record" lists every read of the child, by route.
    reads = ok(await p.reporting.get(f"/audit/pupils/{child}/reads", params={"limit": 200}, headers=auditor))["items"]
    assert {r["route"] for r in reads} >= {e.fields["details"]["route"] for e in expected
                                           if e.action == "personal_data_read" and e.fields["pupil_id"] == str(child)}

    # Nothing in the ledger is personal data in clear: no name, note or parent.
    async with engine.begin() as conn, across_trusts(conn):
        bodies = "\n".join((await conn.scalars(text("SELECT body FROM reporting.audit_entries WHERE trust_id = :t"),
                                               {"t": p.trust_id})).all())
    for clear in ("Zebedee", "Forename", OBSERVATION_NOTE, SESSION_NOTE, PARENT, *numbers, "2017-04-03"):
        assert clear not in bodies, f"{clear!r} is in the ledger"


# Admin actions that need a world of their own (a KEK retired, a database restored from a backup): the
# test named beside each performs it through its command and finds the action in the ledger.
PROVED_ELSEWHERE = {
    AdminAction.KEK_ROTATED.value: "tests/integration/consent/test_kek_rotation.py",
    AdminAction.ERASURES_REAPPLIED.value: "tests/integration/consent/test_backup_restore.py",
}


def test_the_actions_proved_elsewhere_are_proved_there() -> None:
    root = Path(__file__).resolve().parents[3]
    for action, test in PROVED_ELSEWHERE.items():
        assert f'"{action}"' in (root / test).read_text(), f"{test} does not look for {action} in the ledger"


def matches(entry: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key, value in wanted.items():
        if isinstance(value, dict):
            if not isinstance(entry.get(key), dict) or not matches(entry[key], value):
                return False
        elif entry.get(key) != value:
            return False
    return True


async def test_every_get_route_says_whether_it_records_a_read(stack_settings: Any, tmp_path: Any) -> None:
    """A new route that returns data must be classified here: recorded (and proved above) or not personal."""
    settings = stack_settings.model_copy(update={"state_dir": tmp_path})
    apps = {"assessment": assessment_app(settings), "consent": consent_app(settings),
            "planning": planning_app(settings), "reporting": reporting_app(settings)}
    operations = {(name, path): operation["get"] for name, app in apps.items()
                  for path, operation in app.openapi()["paths"].items()
                  if "get" in operation and not path.startswith(AUDIT_QUERIES)}
    assert set(operations) - set(RECORDS_A_READ) - set(NOTHING_PERSONAL_IN_CLEAR) == set(), "GET routes nobody classified"
    assert set(RECORDS_A_READ) - set(operations) == set(), "routes said to record a read that no longer exist"
    # A route records its reads through shared.audit.audit_reads, which takes the reason header.
    recording = {route for route, operation in operations.items()
                 if "Flourish-Access-Reason" in {p["name"] for p in operation.get("parameters", [])}}
    assert recording == set(RECORDS_A_READ)
