"""Every event the platform emits carries the trace of the request (or the event) that caused it.

The four services run in process on the real PostgreSQL and Kafka, on topics of the test's own.
Each command is sent with a traceparent of a trace of its own (the services' server spans continue
it), and names the event types it may cause, directly or through what consumes its events (a
share's delivery outcome, an expiry's erasure). Every event of the test's trust is then read back
from Kafka, where it arrived through the outbox, and its traceparent must name the trace of a
request that may cause its type. The event types seen must be every type the registry knows: a new
event type that no command here causes, or one that drops its trace, fails this test.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.reporting.sharing import SharingSettings
from services.reporting.tables import kernel as reporting_kernel
from shared.audit import AdminAction, record_admin_action
from shared.auth import DevIssuer, Role
from shared.events.registry import Event, registered_types
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.topics import topics_of
from shared.store.emission import trace_id_of
from shared.store.event_store import EventStore
from shared.telemetry import current_trace_headers
from tests.integration.assessment.helpers import upn
from tests.integration.kernel.helpers import eventually
from tests.integration.services.in_process import four_services, settings_for
from tests.unit.assessment.report import levels_at

SAMPLE = "flourish-sample-1"
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group,Leaving Date"
TODAY = date.today()
DELIVERY = SharingSettings(allowed_private_networks=["127.0.0.1/32"], max_attempts=2, retry_schedule_s=[0, 0.05],
                           jitter=0.0, poll_interval_s=0.05)


@dataclass
class Cause:
    label: str
    may_cause: frozenset[str]
    server: bool = True  # a request (a server span continues its trace), or an operator's command


@dataclass
class Platform:
    assessment: httpx.AsyncClient
    consent: httpx.AsyncClient
    planning: httpx.AsyncClient
    reporting: httpx.AsyncClient
    issuer: DevIssuer
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)
    causes: dict[str, Cause] = field(default_factory=dict)  # trace id → what was sent in it

    def as_(self, role: Role, subject: str | None = None) -> dict[str, str]:
        token = self.issuer.issue(subject or f"{role.value}-1", [role], self.trust_id, [self.academy_id])
        return {"Authorization": f"Bearer {token}"}

    def traced(self, role: Role, label: str, *may_cause: type[Event]) -> dict[str, str]:
        """Headers for one command: a token, and a traceparent of a trace of its own."""
        trace_id = uuid.uuid4().hex
        self.causes[trace_id] = Cause(label, frozenset(t.event_type for t in may_cause))
        return {**self.as_(role), "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def types(*names: str) -> list[type[Event]]:
    known = {t.split(".")[2]: model for t, model in registered_types().items()}
    return [known[name] for name in names]


class Webhooks:
    """Agencies' endpoints on 127.0.0.1: /ok takes every delivery, /down refuses every one (both
    answer their endpoint.verification event, so both can be shared with)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        verification = b'"type":"endpoint.verification"' in body
        status = 204 if scope["path"].endswith("/ok") or verification else 500
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def webhooks() -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(Webhooks(), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    await eventually(started)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task


@pytest.fixture
async def platform(stack_settings, topic_prefix, tmp_path) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    settings = settings_for(stack_settings, topic_prefix, tmp_path)
    async with AsyncExitStack() as stack:
        c = (await four_services(stack, settings, DELIVERY)).clients
        yield Platform(c["assessment"], c["consent"], c["planning"], c["reporting"], DevIssuer(settings))


def roster(rows: list[tuple[str, str, date | None]]) -> bytes:
    lines = [f"{number},Surname{n},Forename{n},03/04/2017,F,4,{group},{f'{left:%d/%m/%Y}' if left else ''}"
             for n, (number, group, left) in enumerate(rows)]
    return ("\r\n".join([HEADER, *lines]) + "\r\n").encode()


async def test_every_event_type_carries_the_trace_of_the_request_or_event_that_caused_it(
    platform: Platform, webhooks: str, engine, stack_settings, topic_prefix, spans,  # type: ignore[no-untyped-def]
) -> None:
    p = platform
    pupils = await the_roster_is_imported_then_changed(p)
    child, mover, leaver = pupils
    await consent_is_decided(p, child)
    await a_family_opts_out_and_the_dpo_keeps_what_was_held(p, mover)
    await the_child_is_assessed_and_a_plan_runs_its_course(p, child)
    await reports_are_shared_blocked_delivered_and_failed(p, child, webhooks)
    await retention_expires_the_leaver_and_the_dpo_erases_the_mover(p, leaver, mover)
    await the_ledger_is_queried_and_exported(p, engine)
    ok(await p.consent.post(f"/pupils/{child}/consents/interventions/withdrawal",
                            headers=p.traced(Role.senco, "withdraw consent", *types("ConsentWithdrawn")),
                            json=parent_says({"withdrawn_at": now()})), 201)

    events = await everything_on_kafka(kafka_options(stack_settings, ADMIN), topic_prefix, p.trust_id)
    wrong = []
    for event_type, traceparent in events:
        cause = p.causes.get(trace_id_of(traceparent)) if traceparent else None
        if cause is None or event_type not in cause.may_cause:
            wrong.append((event_type, cause.label if cause else traceparent))
    assert not wrong, f"events without the trace of a request that causes them: {wrong}"
    assert {t for t, _ in events} == set(registered_types()), "event types no command here caused"
    # The trace each event names is the trace of the server span that handled its request.
    server = {format(s.context.trace_id, "032x") for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER}
    named = {trace_id_of(tp) for _, tp in events if tp}
    assert {t for t in named if p.causes[t].server} <= server


async def the_roster_is_imported_then_changed(p: Platform) -> list[uuid.UUID]:
    admin = p.as_(Role.trust_admin)
    ok(await p.assessment.put("/trust", json={"name": "Riverbend Learning Trust"}, headers=admin))
    assert (await p.assessment.put(f"/academies/{p.academy_id}", json={"name": "Oak Hill"}, headers=admin)).is_success
    numbers = [upn() for _ in range(3)]
    imported = ok(await p.assessment.post(
        f"/academies/{p.academy_id}/roster-imports", content=roster([(n, "4B", None) for n in numbers]),
        headers={**p.traced(Role.senco, "import a roster", *types("PupilEnrolled", "PersonalDataRead")),
                 "Content-Type": "text/csv"}))
    pupils = {entry["row"]: uuid.UUID(str(entry["pupil_id"])) for entry in imported["enrolled"]}
    changed = ok(await p.assessment.post(
        f"/academies/{p.academy_id}/roster-imports",
        content=roster([(numbers[0], "4B", None), (numbers[1], "4C", None),
                        (numbers[2], "4B", TODAY - timedelta(days=40))]),
        headers={**p.traced(Role.senco, "import a changed roster", *types("PupilClassChanged", "PupilLeft")),
                 "Content-Type": "text/csv"}))
    assert (changed["moved"], changed["left"]) == (1, 1), changed
    child = pupils[2]
    ok(await p.assessment.get(f"/pupils/{child}", headers=p.traced(Role.senco, "read a pupil", *types("PersonalDataRead"))))
    # An internal route asked through the ingress: refused (404) and recorded in this request's trace.
    refused = await p.assessment.get(f"/pupils/{child}/attributes", headers={
        **p.traced(Role.senco, "ask an internal route through the ingress", *types("AccessRefused")),
        "X-Forwarded-Host": "flourish.example.org"})
    assert refused.status_code == 404, refused.text
    return [pupils[2], pupils[3], pupils[4]]


def parent_says(body: dict[str, Any]) -> dict[str, Any]:
    return {"given_by": {"name": "Jane Example", "relationship": "mother"}, "method": "paper", **body}


def now() -> str:
    return datetime.now(UTC).isoformat()


async def consent_is_decided(p: Platform, child: uuid.UUID) -> None:
    async def known_to_consent() -> bool:  # from PupilEnrolled, on Kafka
        return (await p.consent.get(f"/pupils/{child}/consents", headers=p.as_(Role.senco))).status_code == 200

    await eventually(known_to_consent, timeout=90)
    for purpose, decision, caused in (("interventions", "granted", "ConsentGranted"),
                                      ("share_speech_and_language", "refused", "ConsentRefused")):
        ok(await p.consent.post(f"/pupils/{child}/consents", headers=p.traced(Role.senco, f"{decision} consent",
                                                                             *types(caused)),
                                json=parent_says({"purpose": purpose, "decision": decision, "decided_at": now()})), 201)
    ok(await p.consent.post(f"/pupils/{child}/lawful-bases",
                            headers=p.traced(Role.dpo, "record a lawful basis", *types("LawfulBasisRecorded")), json={
        "agency_category": "social_care", "basis": "public_task", "reason": "a safeguarding referral",
        "policy_reference": "KCSIE 2025", "decided_at": now(),
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat()}), 201)


async def a_family_opts_out_and_the_dpo_keeps_what_was_held(p: Platform, pupil: uuid.UUID) -> None:
    async def known_to_consent() -> bool:
        return (await p.consent.get(f"/pupils/{pupil}/consents", headers=p.as_(Role.senco))).status_code == 200

    await eventually(known_to_consent, timeout=90)
    ok(await p.consent.post(f"/pupils/{pupil}/consents", headers=p.traced(Role.senco, "opt out of the online tool",
                                                                         *types("ConsentRefused")),
                            json=parent_says({"purpose": "online_processing", "decision": "refused", "decided_at": now()})),
       201)
    ok(await p.consent.post(f"/pupils/{pupil}/opt-out/retention", headers=p.traced(
        Role.dpo, "keep what was held", *types("OptOutRetentionKept")), json={
        "retention_basis": "legal_claims", "explanation": "a complaint is open"}), 201)


async def the_child_is_assessed_and_a_plan_runs_its_course(p: Platform, child: uuid.UUID) -> None:
    # Each of these events is sealed with the child's key: a service that fetches the key to seal
    # or to open it has the release recorded (PersonalDataRead) in the trace of the event's request.
    started = ok(await p.assessment.post("/assessments", headers=p.traced(
        Role.senco, "start an assessment", *types("AssessmentStarted", "PersonalDataRead")), json={
        "pupil_id": str(child), "strands": ["being"], "framework_version": SAMPLE}), 201)
    assessment_id = started["assessments"][0]["assessment_id"]
    ok(await p.assessment.post("/observations/bulk", headers=p.traced(
        Role.senco, "record observations", *types("ObservationRecorded", "PersonalDataRead")), json={
        "observed_at": now(), "ratings": [{"pupil_id": str(child), "statement_id": s, "level": level.value,
                                           "assessment_id": assessment_id} for s, level in levels_at(1).items()]}), 201)
    ok(await p.assessment.post(f"/assessments/{assessment_id}/complete", headers=p.traced(
        Role.senco, "complete the assessment", *types("AssessmentCompleted", "StrandScored", "PersonalDataRead"))))

    async def suggestion() -> Any:  # planning learns the scores from StrandScored, on Kafka
        response = await p.planning.get(f"/pupils/{child}/suggestion", headers=p.as_(Role.practitioner))
        body = response.json() if response.status_code == 200 else {}
        return body if assessment_id in [str(a) for a in body.get("based_on", [])] else None

    suggested = await eventually(suggestion, timeout=90)
    draft = ok(await p.planning.post("/plans", headers=p.as_(Role.practitioner), json={
        "kind": "individual", "pupil_ids": [str(child)], "strand": suggested["strand"],
        "targets": [t["statement_id"] for t in suggested["targets"]],
        "activities": [a["activity"] for a in suggested["activities"]],
        "frequency": {k: suggested["frequency"][k] for k in ("sessions_per_week", "minutes", "setting")},
        "review_on": str(TODAY + timedelta(weeks=6))}), 201)
    plan = f"/plans/{draft['plan_id']}"
    ok(await p.planning.post(f"{plan}/issue", json={"practitioner_id": "practitioner-1"},
                             headers=p.traced(Role.practitioner, "issue a plan", *types("PlanIssued", "PersonalDataRead"))))
    ok(await p.planning.post(f"{plan}/sessions", headers=p.traced(Role.practitioner, "log a session",
                                                                  *types("SessionLogged", "PersonalDataRead")),
                             json={"held_on": str(TODAY), "minutes": 30, "staff_present": ["practitioner-1"]}), 201)
    ok(await p.planning.post(f"{plan}/review", headers=p.traced(Role.practitioner, "review a plan",
                                                                 *types("PlanReviewed", "PersonalDataRead"))))
    ok(await p.planning.post(f"{plan}/close", headers=p.traced(Role.practitioner, "close a plan", *types("PlanClosed"))))


async def reports_are_shared_blocked_delivered_and_failed(p: Platform, child: uuid.UUID, webhooks: str) -> None:
    async def agency(path: str, category: str = "camhs") -> str:
        registered = ok(await p.reporting.post("/sharing/agencies", headers=p.traced(
            Role.trust_admin, "register an agency", *types("AdminActionTaken")), json={
            "category": category, "organisation": "North CAMHS", "endpoint_url": f"{webhooks}/{path}"}), 201)
        return str(registered["agency_id"])

    answering, down, social = await agency("ok"), await agency("down"), await agency("ok", "social_care")

    # The report as of the child's latest assessment: the platform assembles it and seals it with
    # the child's key (its release recorded, PersonalDataRead, in the share's trace).
    report_id = str(ok(await p.reporting.get(f"/pupils/{child}/profile", headers=p.traced(
        Role.senco, "read the profile", *types("PersonalDataRead"))))["latest_assessment_id"])

    async def share(agency_id: str, label: str, *may_cause: type[Event]) -> Any:
        return ok(await p.reporting.post("/sharing/shares", headers=p.traced(
            Role.senco, label, *may_cause, *types("PersonalDataRead")), json={
            "agency_id": agency_id, "pupil_id": str(child), "document_kind": "report", "document_id": report_id}), 201)

    assert (await share(answering, "share without consent", *types("ShareBlocked")))["status"] == "blocked"
    ok(await p.consent.post(f"/pupils/{child}/consents", headers=p.traced(Role.senco, "consent to share",
                                                                         *types("ConsentGranted")),
                            json=parent_says({"purpose": "share_camhs", "decision": "granted", "decided_at": now()})),
       201)
    # The delivery worker decides these outcomes, outside any request: they join the share's trace.
    delivered = await share(answering, "share", *types("ReportShared", "ShareDelivered"))
    failed = await share(down, "share to an agency that is down", *types("ReportShared", "ShareDeliveryFailed"))
    # The DPO withholds the family's notice of a share under the safeguarding basis recorded above
    # (the reason is sealed with the pupil's key: consent records the key's release).
    withheld = ok(await p.reporting.post("/sharing/shares", headers=p.traced(
        Role.dpo, "share, the family's notice withheld",
        *types("ReportShared", "FamilyNoticeWithheld", "ShareDelivered", "PersonalDataRead")),
        json={"agency_id": social, "pupil_id": str(child), "document_kind": "report", "document_id": report_id,
              "withhold_family_notice": {"reason_code": "risk_of_harm_to_child", "reason": "a safeguarding referral"}}),
        201)
    assert withheld["family_notice"]["status"] == "withheld"
    for accepted, status in ((delivered, "delivered"), (failed, "failed"), (withheld, "delivered")):

        async def finished(accepted: Any = accepted, status: str = status) -> bool:
            response = await p.reporting.get(f"/sharing/deliveries/{accepted['delivery_id']}", headers=p.as_(Role.senco))
            return response.json().get("status") == status

        await eventually(finished, timeout=60)


async def retention_expires_the_leaver_and_the_dpo_erases_the_mover(p: Platform, leaver: uuid.UUID,
                                                                   mover: uuid.UUID) -> None:
    ok(await p.consent.put(f"/academies/{p.academy_id}/retention-policies/all",
                           headers=p.traced(Role.dpo, "set a retention policy", *types("RetentionPolicySet")),
                           json={"counted_from": "leaving_date", "period": {"days": 30}}))

    async def expired() -> Any:  # consent learns the leaving date from PupilLeft, on Kafka
        run = ok(await p.consent.post("/retention/runs", headers=p.traced(
            Role.dpo, "run retention", *types("RetentionExpired", "PupilErased", "AdminActionTaken"))))
        return [e for e in run["expired"] if e["pupil_id"] == str(leaver)]

    await eventually(expired, timeout=90, interval=0.5)
    ok(await p.consent.post(f"/pupils/{mover}/erasure", json={"reason": "right_to_erasure"},
                            headers=p.traced(Role.dpo, "erase a pupil", *types("PupilErased", "AdminActionTaken"))), 201)


async def the_ledger_is_queried_and_exported(p: Platform, engine: Any) -> None:
    ok(await p.reporting.get("/audit/entries", params={"kind": "erasure"},
                             headers=p.traced(Role.auditor, "query the audit ledger", *types("AuditQueried"))))
    # An operator's command has no request: `flourish audit export` records its fact in its own span.
    with trace.get_tracer("tests").start_as_current_span("flourish audit export"):
        traceparent, _ = current_trace_headers()
        assert traceparent is not None
        p.causes[trace_id_of(traceparent)] = Cause("export the ledger", frozenset(
            t.event_type for t in types("AdminActionTaken")), server=False)
        async with engine.begin() as conn:
            await record_admin_action(conn, EventStore(reporting_kernel), "operator-1", AdminAction.AUDIT_EXPORTED,
                                      trust_id=p.trust_id, target_kind="audit_ledger", target_id=str(p.trust_id))


async def everything_on_kafka(bootstrap: Mapping[str, Any], prefix: str, trust_id: uuid.UUID) -> list[tuple[str, str | None]]:
    """(type, traceparent) of every event of the trust on the test's topics, once every type the
    registry knows has arrived (or the wait is over: the assertions then say what is missing)."""
    contexts = {model.context for model in registered_types().values()}
    consumer = AIOKafkaConsumer(*(t for c in contexts for t in topics_of(c, prefix)), **bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    events: list[tuple[str, str | None]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 120
        while {t for t, _ in events} != set(registered_types()) and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for record in (r for batch in batches.values() for r in batch):
                headers = {name: value.decode() for name, value in record.headers}
                if headers.get("ce_trustid") == str(trust_id):
                    events.append((headers["ce_type"], headers.get("traceparent")))
    finally:
        await consumer.stop()
    return events
