"""The audit ledger inside the running reporting service, on the real broker and server: shares
made by the reporting service show up in "who shared what with which agency" with the consent
they rested on; reads recorded by any service show up in "who read this pupil's record"; every
audit query is itself audited; checkpoints are signed with the published key; `flourish audit
verify` proves nobody altered any of it; and what cannot be recorded is dead-lettered, not lost."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends
from sqlalchemy import text

from flourish.kafka_acls import deprovision, provision
from services.reporting.app import app as reporting_service
from services.reporting.audit.audit_topic import CHECKPOINTS_CONTEXT, KafkaTopicWitness, topic_retention
from services.reporting.audit.metrics import record_signing_backlog
from services.reporting.audit.proofs import check_proof
from services.reporting.audit.signing import load_public_key
from services.reporting.audit.verification import WitnessCheck, verify_database
from services.reporting.audit.witness import DirectoryWitness, ledger_name
from services.reporting.tables import kernel as reporting_kernel
from shared.audit import PersonalDataReads, audit_reads
from shared.auth import Role
from shared.events.consent import ConsentGranted, ConsentWithdrawn
from shared.events.envelope import Envelope, encode, topic_for
from shared.events.reporting import ReportShared, ShareBlocked
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import OutgoingRecord
from shared.service import Runtime, runtime_of
from shared.store.event_store import EventStore
from shared.store.outbox import OutboxRelay
from tests.conftest import counter, metric_value
from tests.integration.audit.conftest import bearer, serving
from tests.integration.kernel.helpers import eventually, read_topic

ENTRIES = "reporting.audit_entries"


def at(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00")


# A route of "another service" that returns a pupil's data and records the read, as every service
# does with shared.audit: added to the reporting service here so that the fact travels the whole
# way (the service's outbox, the audit topic, the ledger consumer) in one process.
reads_router = APIRouter()


@reads_router.get("/test/pupils/{pupil_id}/profile")
async def read_profile(
    pupil_id: uuid.UUID, read: Annotated[PersonalDataReads, Depends(audit_reads)],
    runtime: Annotated[Runtime, Depends(runtime_of)], academy_id: uuid.UUID,
) -> dict[str, str]:
    async with runtime.engine.begin() as conn:
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=read.principal.trust_id,
                          academy_id=academy_id, data_categories=["profile", "observations"])
    return {"pupil_id": str(pupil_id)}


@dataclasses.dataclass
class Reporting:
    client: httpx.AsyncClient
    settings: Any
    engine: Any
    publisher: Any

    @property
    def witness_dir(self) -> Path:
        return Path(self.settings.state_dir) / "witness"

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    async def publish_from_reporting(self, *envelopes: Envelope) -> None:
        """Append as the reporting service does (its event store, its outbox), then relay."""
        store = EventStore(reporting_kernel)
        async with self.engine.begin() as conn:
            for envelope in envelopes:
                await store.append(conn, f"share-{envelope.data.share_id}", [envelope])  # type: ignore[attr-defined]
        await OutboxRelay(self.engine, reporting_kernel, self.publisher, topic_prefix=self.prefix).drain()

    async def publish_from_consent(self, *envelopes: Envelope) -> None:
        """The consent context's events, on its topic, as the consent service's relay sends them."""
        for envelope in envelopes:
            key, headers, value = encode(envelope)
            await self.publisher.send(OutgoingRecord(topic_for("consent", self.prefix), key, value, headers))

    async def entries(self, trust_id: uuid.UUID, action: str | None = None) -> list[Any]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(f"SELECT seq, action, actor, consent_id, share_id FROM {ENTRIES} WHERE trust_id = :t "
                     "AND (CAST(:a AS text) IS NULL OR action = :a) ORDER BY seq"),
                {"t": trust_id, "a": action},
            )
            return list(rows)

    async def until_recorded(self, trust_id: uuid.UUID, count: int, action: str | None = None) -> list[Any]:
        async def enough() -> list[Any] | None:
            found = await self.entries(trust_id, action)
            return found if len(found) >= count else None

        return await eventually(enough, timeout=60)  # type: ignore[no-any-return]

    def dpo(self, trust_id: uuid.UUID, subject: str = "dpo-1") -> dict[str, str]:
        return bearer(self.settings, trust_id, Role.dpo, subject=subject)


@pytest.fixture(scope="module")
async def reporting(stack_settings, engine, publisher, tmp_path_factory) -> AsyncIterator[Reporting]:  # type: ignore[no-untyped-def]
    state = tmp_path_factory.mktemp("reporting")
    settings = stack_settings.model_copy(update={
        "topic_prefix": f"test.{uuid.uuid4().hex[:10]}.", "state_dir": state, "jwks_path": state / "dev-issuer" / "jwks.json",
        "relay_poll_interval_s": 0.1,
    })
    await provision(settings)  # the prefix's topics and ACLs, as Kafka's admin
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLOURISH_AUDIT_CHECKPOINT_EVERY_ENTRIES", "3")
        env.setenv("FLOURISH_AUDIT_CHECKPOINT_POLL_S", "0.1")
        env.setenv("FLOURISH_AUDIT_WITNESS_DIR", str(state / "witness"))
        app = reporting_service(settings)
        app.include_router(reads_router)
        async with serving(app) as client:
            yield Reporting(client, settings, engine, publisher)
    await deprovision(settings, settings.topic_prefix)


def consent_granted(trust_id: uuid.UUID, academy_id: uuid.UUID, pupil_id: uuid.UUID, day: str, **fields: Any) -> Envelope:
    data = ConsentGranted(
        consent_id=fields.pop("consent_id", uuid.uuid4()), pupil_id=pupil_id, purpose="share_camhs", record_version=1,
        method="paper", given_by="fl1.sealed-name-and-relationship", covers=["report"], recorded_by="office-2",
        decided_at=at(day), **fields,
    )
    return Envelope(data=data, trust_id=trust_id, academy_id=academy_id, source="/flourish/consent")


def shared(trust_id: uuid.UUID, academy_id: uuid.UUID, pupil_id: uuid.UUID, consent_id: uuid.UUID | None, day: str,
           agency_id: uuid.UUID, category: str = "camhs", by: str = "senco-7") -> Envelope:
    data = ReportShared(share_id=uuid.uuid4(), pupil_id=pupil_id, agency_id=agency_id, agency_category=category,
                        document_kind="report", consent_id=consent_id, shared_by=by, shared_at=at(day))
    return Envelope(data=data, trust_id=trust_id, academy_id=academy_id, source="/flourish/reporting")


async def test_a_dpo_asks_who_shared_what_with_which_agency_last_term_and_gets_the_consent_each_rested_on(reporting):
    trust, academy, pupil, camhs, salt = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    grant = consent_granted(trust, academy, pupil, "2026-09-10")
    consent_id = grant.data.consent_id  # type: ignore[attr-defined]
    in_term = shared(trust, academy, pupil, consent_id, "2026-10-02", camhs)
    other_agency = shared(trust, academy, pupil, consent_id, "2026-10-03", salt, category="speech_and_language")
    last_year = shared(trust, academy, pupil, consent_id, "2026-06-30", camhs)
    blocked = Envelope(data=ShareBlocked(share_id=uuid.uuid4(), pupil_id=pupil, agency_id=camhs, agency_category="camhs",
                                         reason="consent_not_in_force", blocked_at=at("2026-11-01")),
                       trust_id=trust, academy_id=academy, source="/flourish/reporting")
    withdrawn = Envelope(data=ConsentWithdrawn(consent_id=consent_id, withdrawal_id=uuid.uuid4(), pupil_id=pupil,
                                               purpose="share_camhs", record_version=2, method="email",
                                               given_by="fl1.sealed", recorded_by="office-2", withdrawn_at=at("2026-10-20")),
                         trust_id=trust, academy_id=academy, source="/flourish/consent")
    await reporting.publish_from_consent(grant, withdrawn)
    await reporting.publish_from_reporting(in_term, other_agency, last_year, blocked)
    await reporting.until_recorded(trust, 6)

    autumn = {"from": "2026-09-01", "to": "2026-12-18"}
    response = await reporting.client.get("/audit/shares", params={**autumn, "agency_id": str(camhs)},
                                          headers=reporting.dpo(trust))
    assert response.status_code == 200, response.text
    [share] = response.json()["items"]
    assert share["share_id"] == str(in_term.data.share_id)  # type: ignore[attr-defined]
    assert (share["shared_by"], share["pupil_id"], share["agency_category"], share["document_kind"]) == (
        "senco-7", str(pupil), "camhs", "report")
    assert share["consent_id"] == str(consent_id) and share["consent_in_force"] is True
    decisions = [(d["decision"], d["before_share"], d["recorded_by"]) for d in share["consent_decisions"]]
    assert decisions == [("consent_granted", True, "office-2"), ("consent_withdrawn", False, "office-2")]

    whole_term = await reporting.client.get("/audit/shares", params={**autumn, "include_blocked": "true"},
                                            headers=reporting.dpo(trust))
    assert [s["action"] for s in whole_term.json()["items"]] == ["share", "share", "share_blocked"]
    by_category = await reporting.client.get("/audit/shares", params={**autumn, "agency_category": "speech_and_language"},
                                             headers=reporting.dpo(trust))
    assert [s["agency_id"] for s in by_category.json()["items"]] == [str(salt)]
    by_staff = await reporting.client.get("/audit/shares", params={"staff_id": "senco-7"}, headers=reporting.dpo(trust))
    assert len(by_staff.json()["items"]) == 3
    by_academy = await reporting.client.get("/audit/shares", params={"academy_id": str(uuid.uuid4())},
                                            headers=reporting.dpo(trust))
    assert by_academy.json()["items"] == []

    csv = await reporting.client.get("/audit/shares.csv", params={**autumn, "pupil_id": str(pupil)}, headers=reporting.dpo(trust))
    lines = csv.text.strip().splitlines()
    assert csv.headers["content-type"].startswith("text/csv") and lines[0].startswith("seq,entry_hash,shared_at")
    assert len(lines) == 3 and "consent_granted 2026-09-10T10:00:00.000000Z (entry " in lines[1]

    # ... and proves with `flourish audit verify` (online, with the published key) that nobody altered it.
    key = load_public_key((await reporting.client.get("/audit/public-key")).text)
    proof = await reporting.client.get(f"/audit/shares/{in_term.data.share_id}/proof", headers=reporting.dpo(trust))  # type: ignore[attr-defined]
    assert proof.status_code == 200 and check_proof(proof.json(), key) is None
    verified = await verify_database(reporting.settings.sync_database_url, "reporting",
                                     {proof.json()["public_key"]["key_id"]: key}, [trust])
    assert verified.ok and verified.reports[0].entries >= 6 and verified.reports[0].checkpoints >= 1


async def test_every_audit_query_is_itself_audited(reporting):
    trust = uuid.uuid4()
    await reporting.client.get("/audit/shares", params={"from": "2026-09-01", "agency_category": "camhs"},
                               headers=reporting.dpo(trust, subject="dpo-42"))
    [entry] = await reporting.until_recorded(trust, 1, action="audit_queried")
    assert entry.actor == "dpo-42"
    page = await reporting.client.get("/audit/entries", params={"kind": "audit"}, headers=reporting.dpo(trust))
    [queried] = page.json()["items"]
    assert queried["details"] == {"query": "shares", "filter.from": "2026-09-01", "filter.agency_category": "camhs",
                                  "filter.action": "share", "result_count": 0}


async def test_reads_recorded_by_a_service_show_who_read_a_pupils_record(reporting):
    trust, academy, pupil = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    teacher = bearer(reporting.settings, trust, Role.practitioner, subject="teacher-4", academies=(academy,))
    read = await reporting.client.get(f"/test/pupils/{pupil}/profile", params={"academy_id": str(academy)},
                                      headers={**teacher, "Flourish-Access-Reason": "safeguarding_review"})
    assert read.status_code == 200
    free_text = await reporting.client.get(f"/test/pupils/{pupil}/profile", params={"academy_id": str(academy)},
                                           headers={**teacher, "Flourish-Access-Reason": "asked by Jane's mum"})
    assert free_text.status_code == 422, "a reason must be a code: free text could name a child"
    await reporting.until_recorded(trust, 1, action="personal_data_read")

    page = await reporting.client.get(f"/audit/pupils/{pupil}/reads", headers=reporting.dpo(trust))
    [record] = page.json()["items"]
    assert (record["reader"], record["data_categories"], record["reason"], record["academy_id"]) == (
        "teacher-4", ["profile", "observations"], "safeguarding_review", str(academy))
    assert record["route"] == "/test/pupils/{pupil_id}/profile" and record["service"] == "/flourish/reporting"


async def test_only_auditors_and_dpos_of_the_trust_may_ask(reporting):
    trust, academy, pupil = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    share = shared(trust, academy, pupil, None, "2026-10-01", uuid.uuid4())
    await reporting.publish_from_reporting(share)
    await reporting.until_recorded(trust, 1)

    senco = bearer(reporting.settings, trust, Role.senco, academies=(academy,))
    assert (await reporting.client.get("/audit/shares", headers=senco)).status_code == 403
    auditor = bearer(reporting.settings, trust, Role.auditor, subject="auditor-1")
    assert len((await reporting.client.get("/audit/shares", headers=auditor)).json()["items"]) == 1

    other_trust_id = uuid.uuid4()
    other_trust = reporting.dpo(other_trust_id)
    assert (await reporting.client.get("/audit/shares", headers=other_trust)).json()["items"] == []
    assert (await reporting.client.get(f"/audit/shares/{share.data.share_id}/proof", headers=other_trust)).status_code == 404  # type: ignore[attr-defined]
    # Entry numbers are per trust: the other trust's entry 1 is its own (the audit of its question).
    await reporting.until_recorded(other_trust_id, 1)
    own = (await reporting.client.get("/audit/entries/1/proof", headers=other_trust)).json()
    assert own["trust_id"] == str(other_trust_id) and str(share.data.share_id) not in str(own)  # type: ignore[attr-defined]
    assert (await reporting.client.get("/audit/entries/999999/proof", headers=other_trust)).status_code == 404


@pytest.mark.parametrize(("params", "status", "says"), [
    ({"from": "2026-12-18", "to": "2026-09-01"}, 400, "inverted"),
    ({"agency_category": "astrology"}, 422, "agency_category"),
    ({"limit": "500"}, 422, "limit"),
    ({"cursor": "bm90LWEtY3Vyc29y"}, 400, "cursor"),
    ({"pupil_id": "Jane Smith"}, 422, "pupil_id"),
    ({"staff_id": 'staff "7"'}, 422, "staff_id"),
])
async def test_bad_questions_get_a_clear_4xx_and_record_nothing(reporting, params, status, says):
    trust = uuid.uuid4()
    response = await reporting.client.get("/audit/shares", params=params, headers=reporting.dpo(trust))
    assert response.status_code == status and response.headers["content-type"] == "application/problem+json"
    assert says in response.text
    assert "Jane" not in response.text
    assert await reporting.entries(trust) == []


async def test_pages_walk_every_share_once_in_time_order(reporting):
    trust, academy, agency = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    shares = [shared(trust, academy, uuid.uuid4(), None, f"2026-10-0{day}", agency) for day in (5, 1, 4, 2, 3)]
    await reporting.publish_from_reporting(*shares)
    await reporting.until_recorded(trust, 5)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await reporting.client.get("/audit/shares", params=params, headers=reporting.dpo(trust))).json()
        seen += [item["shared_at"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(set(seen)) == 5


async def test_an_event_delivered_twice_is_recorded_once(reporting):
    trust, academy, pupil = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    share = shared(trust, academy, pupil, None, "2026-10-01", uuid.uuid4())
    key, headers, value = encode(share)
    for _ in range(3):
        await reporting.publisher.send(OutgoingRecord(topic_for("reporting", reporting.prefix), key, value, headers))
    # Same pupil, same partition, after the copies: once the marker is recorded, every copy was seen.
    marker = shared(trust, academy, pupil, None, "2026-10-02", uuid.uuid4())
    key, headers, value = encode(marker)
    await reporting.publisher.send(OutgoingRecord(topic_for("reporting", reporting.prefix), key, value, headers))
    recorded = await reporting.until_recorded(trust, 2)
    assert [(e.seq, e.share_id) for e in recorded] == [(1, share.data.share_id), (2, marker.data.share_id)]  # type: ignore[attr-defined]


async def test_an_event_that_cannot_be_recorded_is_dead_lettered_and_counted_not_dropped(reporting):
    trust, academy, pupil = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # A quote in an id cannot be recorded faithfully (the ledger refuses rather than alter it).
    unrecordable = shared(trust, academy, pupil, None, "2026-10-01", uuid.uuid4(), by='staff "7"')
    fine = shared(trust, academy, pupil, None, "2026-10-02", uuid.uuid4())
    failures = counter("flourish_audit_record_failures", event_type=ReportShared.event_type, error_type="UnrecordableEvent")
    dead_lettered = counter("flourish_dead_lettered", consumer="reporting.audit-ledger", cause="handler_failed")
    await reporting.publish_from_reporting(unrecordable, fine)
    [entry] = await reporting.until_recorded(trust, 1)
    assert entry.share_id == fine.data.share_id  # type: ignore[attr-defined]

    dead = await read_topic(kafka_options(reporting.settings, ADMIN), f"{reporting.prefix}dlq.reporting.audit-ledger",
                            expected=1)
    # (Relayed once or twice: the test's own drain may race the service's relay; both copies
    # are the same event, and each is dead-lettered with the same reason.)
    letters = [r for r in dead if dict(r.headers)["ce_id"] == str(unrecordable.id).encode()]
    assert letters and {dict(r.headers)["flourish_dlq_reason"] for r in letters} == {b"handler failed: UnrecordableEvent"}
    # Once per copy relayed (one or two, as above).
    assert failures.delta() >= 1 and dead_lettered.delta() >= 1


async def test_checkpoints_are_signed_with_the_published_key_and_the_audit_topic_keeps_everything(reporting):
    trust, academy = uuid.uuid4(), uuid.uuid4()
    # The signing-backlog gauges read what the signer last reported, in any test: start them at a
    # value no signer reports, so that a real reading is one this test's signer made.
    record_signing_backlog(-1, -1.0)
    await reporting.publish_from_reporting(
        *[shared(trust, academy, uuid.uuid4(), None, "2026-10-01", uuid.uuid4()) for _ in range(7)])
    await reporting.until_recorded(trust, 7)

    async def signed() -> list[Any] | None:
        page = (await reporting.client.get("/audit/checkpoints", headers=reporting.dpo(trust))).json()["items"]
        return page if page and page[0]["seq"] >= 6 else None

    checkpoints = await eventually(signed, timeout=30)
    published = (await reporting.client.get("/audit/public-key")).json()
    assert {c["key_id"] for c in checkpoints} == {published["key_id"]}
    key = load_public_key(published["pem"])
    report = (await verify_database(reporting.settings.sync_database_url, "reporting", {published["key_id"]: key},
                                    [trust])).reports[0]
    assert report.ok and report.checkpoints == len(checkpoints) and report.last_checkpoint.seq == checkpoints[0]["seq"]

    # The dashboards' signing backlog: how many entries wait for a signature, and for how long.
    async def backlog_reported() -> bool:
        return metric_value("flourish_audit_unsigned_entries") >= 0 and metric_value("flourish_audit_checkpoint_age") >= 0

    await eventually(backlog_reported, timeout=30)

    retention = await eventually(lambda: _retention(reporting), timeout=30)
    assert retention == {"retention.ms": "-1", "retention.bytes": "-1"}

    # Each checkpoint also left the database: in the configured directory witness and on Kafka's
    # checkpoint topic (kept forever too), exactly as signed; and the chain verifies against them.
    name = ledger_name(reporting.settings.database_url, "reporting")
    witness = DirectoryWitness(reporting.witness_dir, name)
    topic = KafkaTopicWitness(kafka_options(reporting.settings, ADMIN),
                              topic_for(CHECKPOINTS_CONTEXT, reporting.prefix), name)

    async def witnessed() -> list[Any] | None:
        held = await witness.checkpoints(trust)
        return held if held and held[-1].seq == checkpoints[0]["seq"] else None

    held = await eventually(witnessed, timeout=30)
    assert [c.signature for c in held] == [c["signature"] for c in reversed(checkpoints)]

    async def on_kafka() -> list[Any] | None:
        found = await KafkaTopicWitness(topic.kafka, topic.topic, name).checkpoints(trust)
        return found if found == held else None

    await eventually(on_kafka, timeout=30)
    checked = await verify_database(reporting.settings.sync_database_url, "reporting", {published["key_id"]: key},
                                    [trust], witness=WitnessCheck(witness, also=[topic]))
    assert checked.ok and checked.reports[0].witnessed == len(held)
    kept = await topic_retention(kafka_options(reporting.settings, ADMIN), topic.topic)
    assert kept == {"retention.ms": "-1", "retention.bytes": "-1"}


async def _retention(reporting: Reporting) -> dict[str, str] | None:
    """Every producer's audit-fact topic keeps everything (one answer if they all do)."""
    from shared.messaging.topics import audit_fact_topics

    found = [await topic_retention(kafka_options(reporting.settings, ADMIN), topic)
             for topic in audit_fact_topics(reporting.prefix)]
    return found[0] if all(f.get("retention.ms") == "-1" for f in found) and len({*map(str, found)}) == 1 else None


async def test_a_dpo_sees_the_ledgers_status_and_verifies_it_now(reporting, superuser):  # type: ignore[no-untyped-def]
    """GET /audit/status and POST /audit/verification (the DPO console's "verify now"): the newest
    checkpoint and its age, the witness reachable, an intact chain verified — and once a superuser
    rewrites an entry behind the triggers, verify now names it and the status says so. Both are
    audited questions; a SENCo gets neither."""
    trust, academy, pupil = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await reporting.publish_from_reporting(*(shared(trust, academy, pupil, None, "2026-10-0" + str(n), uuid.uuid4())
                                             for n in range(1, 5)))
    await reporting.until_recorded(trust, 4)
    dpo = reporting.dpo(trust)

    async def checkpointed() -> Any:
        body = (await reporting.client.get("/audit/status", headers=dpo)).json()
        return body if body["last_checkpoint"] else None

    status = await eventually(checkpointed, timeout=30)
    assert status["witness"]["reachable"] is True and status["last_checkpoint"]["age_s"] >= 0
    assert status["last_verification"] is None
    verified = await reporting.client.post("/audit/verification", headers=dpo)
    assert verified.status_code == 200 and verified.json()["ok"] is True, verified.text
    assert verified.json()["entries"] >= 4
    status = (await reporting.client.get("/audit/status", headers=dpo)).json()
    assert status["last_verification"]["ok"] is True and status["last_verification"]["how"] == "asked"

    seq = (await reporting.entries(trust))[1].seq
    original = await superuser.fetchval(f"SELECT body FROM {ENTRIES} WHERE trust_id = $1 AND seq = $2", trust, seq)

    async def rewrite(body: str) -> None:
        async with superuser.transaction():
            await superuser.execute("SET LOCAL session_replication_role = replica")
            await superuser.execute(f"UPDATE {ENTRIES} SET body = $3 WHERE trust_id = $1 AND seq = $2", trust, seq, body)

    await rewrite(original.replace('"camhs"', '"social_care"'))
    try:
        failed = (await reporting.client.post("/audit/verification", headers=dpo)).json()
        assert failed["ok"] is False and any(p.startswith(f"entry {seq}:") for p in failed["problems"]), failed
        assert (await reporting.client.get("/audit/status", headers=dpo)).json()["last_verification"]["ok"] is False
    finally:
        await rewrite(original)  # the chain as it was: no other test meets a tampered trust
    # Each question is in the ledger (recorded through the outbox and the topic, so soon, not at once):
    # the status asked three times or more, the verification twice.
    await reporting.until_recorded(trust, 3 + 2, "audit_queried")
    senco = bearer(reporting.settings, trust, Role.senco)
    assert (await reporting.client.get("/audit/status", headers=senco)).status_code == 403
    assert (await reporting.client.post("/audit/verification", headers=senco)).status_code == 403
